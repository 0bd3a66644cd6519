//! The metadata manifest columns of an ingested DICOM image, free of identifying data.
//!
//! PatientName, PatientID, PatientBirthDate, AccessionNumber and InstitutionName are never copied: the
//! patient id and the study/series UIDs appear only as keyed hashes ([`super::subject`]).

use std::collections::BTreeMap;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::header::{text, ImageHeader};
use super::subject::pseudonym;
use crate::store::MetaValue;

/// Fills metadata columns from the header.
pub fn collect(obj: &InMemDicomObject, h: &ImageHeader, ts: (&str, &str), key: &[u8; 32], meta: &mut BTreeMap<String, MetaValue>) {
    let s = |v: Option<String>| MetaValue::Str(v.unwrap_or_default());
    meta.insert("rows".into(), MetaValue::Int(h.rows as i64));
    meta.insert("columns".into(), MetaValue::Int(h.columns as i64));
    meta.insert("bits_stored".into(), MetaValue::Int(h.layout.bits_stored as i64));
    meta.insert("bits_allocated".into(), MetaValue::Int(h.layout.bits_allocated as i64));
    meta.insert("signed".into(), MetaValue::Int(h.layout.signed as i64));
    meta.insert("photometric".into(), MetaValue::Str(h.photometric.clone()));
    meta.insert("transfer_syntax".into(), MetaValue::Str(ts.0.to_string()));
    meta.insert("transfer_syntax_name".into(), MetaValue::Str(ts.1.to_string()));
    meta.insert("modality".into(), s(text(obj, tags::MODALITY)));
    meta.insert("laterality".into(), s(text(obj, tags::IMAGE_LATERALITY).or_else(|| text(obj, tags::LATERALITY))));
    let view = text(obj, tags::VIEW_POSITION)
        .or_else(|| {
            obj.get(tags::VIEW_CODE_SEQUENCE)
                .and_then(|e| e.items())
                .and_then(|items| items.first())
                .and_then(|item| text(item, tags::CODE_MEANING))
        })
        .or_else(|| text(obj, tags::PATIENT_ORIENTATION));
    meta.insert("view".into(), s(view));
    meta.insert("manufacturer".into(), s(text(obj, tags::MANUFACTURER)));
    meta.insert("model".into(), s(text(obj, tags::MANUFACTURER_MODEL_NAME)));
    let spacing = text(obj, tags::PIXEL_SPACING).or_else(|| text(obj, tags::IMAGER_PIXEL_SPACING));
    meta.insert("pixel_spacing".into(), s(spacing));
    meta.insert("presentation_intent".into(), s(text(obj, tags::PRESENTATION_INTENT_TYPE)));
    let hashed = |tag| text(obj, tag).map(|v| pseudonym(key, &v)).unwrap_or_default();
    meta.insert("study_uid_hash".into(), MetaValue::Str(hashed(tags::STUDY_INSTANCE_UID)));
    meta.insert("series_uid_hash".into(), MetaValue::Str(hashed(tags::SERIES_INSTANCE_UID)));
    meta.insert("subject".into(), MetaValue::Str(hashed(tags::PATIENT_ID)));
}
