//! A small token issuer for the bearer-token flow: it checks basic
//! credentials and hands out ES256 JWTs that a registry configured with
//! `auth: token` trusts (the signing certificate is its root bundle and
//! travels in the token's `x5c` header). It also answers the OAuth2
//! `refresh_token` grant (a POSTed form) for one identity token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

/// The service name the registry and issuer agree on.
pub const SERVICE: &str = "orca-test-registry";
/// The issuer name in tokens.
pub const ISSUER: &str = "orca-test-issuer";

/// A running token issuer.
#[derive(Debug)]
pub struct TokenIssuer {
    /// Its port on 127.0.0.1 (tokens at `/token`).
    pub port: u16,
    /// PEM of the certificate the registry must trust.
    pub certificate_pem: String,
    pub(crate) issued: Arc<AtomicU32>,
    /// The identity token accepted in the refresh grant.
    pub(crate) refresh_token: String,
}

struct Signer {
    key: EcdsaKeyPair,
    x5c: String,
    user: String,
    password: String,
    refresh_token: String,
}

impl TokenIssuer {
    /// Starts an issuer on a free loopback port, granting whatever is asked
    /// to `user`/`password` and refusing everyone else.
    pub fn start(user: &str, password: &str) -> std::io::Result<Self> {
        let other = |e: String| std::io::Error::other(e);
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["orca-test-issuer".to_owned()])
                .map_err(|e| other(e.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &signing_key.serialize_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| other(e.to_string()))?;
        let mut nonce = [0u8; 16];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut nonce)
            .map_err(|_| other("no randomness".into()))?;
        let refresh_token = format!("orca-refresh-{}", b64url(&nonce));
        let signer = Arc::new(Signer {
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            user: user.to_owned(),
            password: password.to_owned(),
            refresh_token: refresh_token.clone(),
        });
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let issued = Arc::new(AtomicU32::new(0));
        let count = issued.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (signer, count) = (signer.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = answer(stream, &signer, &count);
                });
            }
        });
        Ok(TokenIssuer {
            port,
            certificate_pem: cert.pem(),
            issued,
            refresh_token,
        })
    }

    /// Tokens handed out so far.
    pub(crate) fn issued(&self) -> u32 {
        self.issued.load(Ordering::SeqCst)
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_query(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(stream: TcpStream, signer: &Signer, count: &AtomicU32) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut form = vec![0u8; length.min(64 * 1024)];
    reader.read_exact(&mut form)?;
    let form = String::from_utf8_lossy(&form).into_owned();
    let field = |name: &str| {
        form.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| decode_query(value))
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", signer.user, signer.password))
    );
    let refreshed = request_line.starts_with("POST ")
        && field("grant_type").as_deref() == Some("refresh_token")
        && field("refresh_token").as_deref() == Some(signer.refresh_token.as_str());
    let mut stream = stream;
    if !refreshed && authorization.as_deref() != Some(expected.as_str()) {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = if refreshed {
        form.as_str()
    } else {
        target.split_once('?').map(|(_, q)| q).unwrap_or("")
    };
    let mut access = Vec::new();
    for pair in query.split('&') {
        let Some(("scope", value)) = pair.split_once('=') else {
            continue;
        };
        let scope = decode_query(value);
        let mut parts = scope.splitn(3, ':');
        if let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        {
            let actions: Vec<&str> = actions.split(',').collect();
            access.push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let n = count.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [signer.x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": signer.user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("orca-{n}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let signature = signer
        .key
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .map_err(|_| std::io::Error::other("signing failed"))?;
    let token = format!("{signing_input}.{}", b64url(signature.as_ref()));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300, "issued_at": ""}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}
