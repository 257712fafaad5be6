//! Media-type detection for manifest bytes that arrive without a type (a
//! pull by digest, a blob read from a layout), following the decision table
//! of `mediaType`, `manifests`, `config`, `layers` and `fsLayers` that
//! container engines use — including refusing Docker schema 1 by default.

use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::model::MediaType;

/// Whether Docker image manifest v2 schema 1 documents are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schema1 {
    /// Refuse them with [`Error::Schema1Refused`] (the default).
    #[default]
    Refuse,
    /// Accept them (explicitly enabled by the user).
    Allow,
}

impl Schema1 {
    /// As the running operation or the process says (see
    /// [`super::schema1_allowed`]).
    pub fn here() -> Schema1 {
        if super::schema1_allowed() {
            Schema1::Allow
        } else {
            Schema1::Refuse
        }
    }
}

/// Detects the media type of manifest bytes.
///
/// An explicit `mediaType` wins, but a document whose fields contradict it
/// is refused; without one, `fsLayers` means schema 1, `config` or `layers`
/// an OCI image manifest, and anything else an OCI index.
pub fn detect_media_type(bytes: &[u8], schema1: Schema1) -> Result<MediaType> {
    let invalid = |reason: String, source: Option<serde_json::Error>| Error::InvalidManifest {
        what: "manifest without a media type".into(),
        reason,
        source: source.map(|e| Box::new(e) as _),
    };
    let value: &RawValue = serde_json::from_slice(bytes)
        .map_err(|e| invalid("it is not valid JSON".into(), Some(e)))?;
    if !value.get().trim_start().starts_with('{') {
        return Err(invalid("it is not a JSON object".into(), None));
    }
    // A field set to `null` counts as present, as it does for the engines
    // whose table this is.
    let fields: HashMap<String, &RawValue> = serde_json::from_str(value.get())
        .map_err(|e| invalid("it is not a JSON object".into(), Some(e)))?;
    let media_type: Option<String> = match fields.get("mediaType") {
        Some(raw) => serde_json::from_str::<Option<String>>(raw.get())
            .map_err(|e| invalid("its mediaType is not a string".into(), Some(e)))?,
        None => None,
    };
    let (manifests, config, layers, fs_layers) = (
        fields.contains_key("manifests"),
        fields.contains_key("config"),
        fields.contains_key("layers"),
        fields.contains_key("fsLayers"),
    );
    let refuse_schema1 = || match schema1 {
        Schema1::Refuse => Err(Error::Schema1Refused {
            what: "manifest".into(),
        }),
        Schema1::Allow => Ok(()),
    };

    if let Some(declared) = media_type.filter(|m| !m.is_empty()) {
        let declared = MediaType::new(declared);
        let clash = |fields: &str| {
            Err(invalid(
                format!("its mediaType is {declared} but it has {fields}"),
                None,
            ))
        };
        if declared.is_image_manifest() {
            if manifests || fs_layers {
                return clash("\"manifests\" or \"fsLayers\", which it should not have");
            }
        } else if declared.is_index() {
            if config || layers || fs_layers {
                return clash("\"config\", \"layers\" or \"fsLayers\", which it should not have");
            }
        } else if declared.is_schema1() {
            refuse_schema1()?;
            if manifests || layers {
                return clash("\"manifests\" or \"layers\", which it should not have");
            }
        }
        return Ok(declared);
    }

    if fs_layers && !manifests && !layers && !config {
        refuse_schema1()?;
        // Signed when it carries signatures (it is then named by its
        // payload's digest), plain otherwise.
        return Ok(if fields.contains_key("signatures") {
            MediaType::DOCKER_SCHEMA1_SIGNED
        } else {
            MediaType::DOCKER_SCHEMA1
        });
    }
    if (config || layers) && !manifests && !fs_layers {
        return Ok(MediaType::OCI_MANIFEST);
    }
    if !config && !layers && !fs_layers {
        return Ok(MediaType::OCI_INDEX);
    }
    Err(invalid(
        "its fields fit no manifest type (it mixes \"manifests\", \"config\"/\"layers\" and \"fsLayers\")".into(),
        None,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(text: &str) -> Result<MediaType> {
        detect_media_type(text.as_bytes(), Schema1::Refuse)
    }

    #[test]
    fn decision_table() {
        let oci_m = MediaType::OCI_MANIFEST;
        let oci_i = MediaType::OCI_INDEX;
        let docker = MediaType::DOCKER_MANIFEST;
        for (text, expected) in [
            (r#"{"config":{},"layers":[]}"#, &oci_m),
            (r#"{"layers":[]}"#, &oci_m),
            (r#"{"config":null}"#, &oci_m),
            (r#"{"manifests":[]}"#, &oci_i),
            (r#"{}"#, &oci_i),
            (
                r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{}}"#,
                &docker,
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                &oci_i,
            ),
        ] {
            assert_eq!(&detect(text).expect(text), expected, "{text}");
        }
        let unknown =
            detect(r#"{"mediaType":"application/x-custom","config":{}}"#).expect("unknown");
        assert_eq!(unknown.as_str(), "application/x-custom");
    }

    #[test]
    fn contradictions_are_refused() {
        for (text, expected) in [
            (
                r#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#,
                "should not have",
            ),
            (
                r#"{"mediaType":"application/vnd.oci.image.index.v1+json","layers":[]}"#,
                "should not have",
            ),
            (r#"{"manifests":[],"config":{}}"#, "fit no manifest type"),
            (r#"{"fsLayers":[],"layers":[]}"#, "fit no manifest type"),
            ("[1]", "not a JSON object"),
            ("{", "not valid JSON"),
            (r#"{"mediaType":5}"#, "mediaType is not a string"),
        ] {
            let err = detect(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn schema1_is_refused_unless_allowed() {
        let text = r#"{"schemaVersion":1,"fsLayers":[],"history":[]}"#;
        let err = detect(text).expect_err("schema 1");
        assert!(matches!(err, Error::Schema1Refused { .. }), "{err}");
        assert!(err.to_string().contains("deprecated"), "{err}");
        // No API enables schema 1, so the message offers none.
        assert!(!err.to_string().contains("enable"), "{err}");
        let ok = detect_media_type(text.as_bytes(), Schema1::Allow).expect("allowed");
        assert!(ok.is_schema1());
        let declared = r#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","fsLayers":[]}"#;
        assert!(matches!(
            detect(declared),
            Err(Error::Schema1Refused { .. })
        ));
        assert!(detect_media_type(declared.as_bytes(), Schema1::Allow).is_ok());
    }
}
