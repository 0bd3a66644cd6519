//! Writing a label map as a DICOM Segmentation (PS3.3 A.51, Segmentation Storage) that references the
//! mammogram it was predicted from, so a DICOM viewer overlays it on that image.
//!
//! One BINARY segment per class of the class table except its background, in table order, each with
//! the class's name as label, its colour as the recommended display colour (CIELab) and codes from a
//! private coding scheme (`99MMFLOW`: these classes have no standard codes of their own); one frame per
//! segment, 1 bit per pixel, frames packed back to back (PS3.5 8.1.1). Every frame references the
//! source image (Derivation Image), and the instance references its series (Common Instance
//! Reference), so the SEG attaches to that image.
//!
//! What is copied from the source, and why: the Study Instance UID (a SEG belongs to the study of the
//! image it segments; without it no viewer files it there), the source's Series and SOP Instance UIDs
//! and SOP Class UID (the references above), and its Frame of Reference UID when it has one (the SEG
//! shares the image's pixel grid). Nothing else. The Patient and Study modules' type 2 attributes
//! (name, id, birth date, sex, study date, accession number, ...) are written empty, as the standard
//! allows: mammoflow's outputs never hold patient data (a PACS that files objects by patient id needs
//! the id added there, by whoever already holds it). The SEG's own Series and SOP Instance UIDs are
//! new, derived from the source's SOP Instance UID, the label map and the segments so that writing
//! the same prediction twice gives the same file, and another class table another instance.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::error::Result;
use crate::item_err;
use crate::npy::Tensor2;

/// Segmentation Storage.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// What a SEG takes from the image it segments. `ingest-dicom` stores it beside each image (an object
/// of the workspace, never a manifest column: the UIDs in manifests are keyed hashes) so that the
/// `export` stage can write SEGs without reading the sources again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceRef {
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Frame of Reference UID, if the image has one.
    pub frame_of_reference_uid: Option<String>,
    /// Pixel spacing (row, column) in mm, if known.
    pub pixel_spacing: Option<(f64, f64)>,
    /// Rows and columns of the image, if the header says (a SEG shares the image's grid).
    #[serde(default)]
    pub size: Option<(usize, usize)>,
}

impl SourceRef {
    /// Reads the references from a DICOM file (its header only).
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let obj = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| item_err!("{}: cannot read as DICOM: {e}", path.display()))?;
        Self::of(&obj, &path.display().to_string())
    }

    /// The references of an opened DICOM object; `what` names it in errors.
    pub fn of(obj: &InMemDicomObject, what: &str) -> Result<Self> {
        let get = |tag: Tag| obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).to_string()).filter(|s| !s.is_empty());
        let need = |tag: Tag, name: &str| get(tag).ok_or_else(|| item_err!("{what}: no {name}: a SEG cannot reference this image"));
        let pixel_spacing = get(tags::PIXEL_SPACING).or_else(|| get(tags::IMAGER_PIXEL_SPACING)).and_then(|s| {
            let mut it = s.split('\\').map(|v| v.trim().parse::<f64>().ok());
            Some((it.next()??, it.next()??)).filter(|(r, c): &(f64, f64)| r.is_finite() && c.is_finite() && *r > 0.0 && *c > 0.0)
        });
        let dim = |tag: Tag| obj.element(tag).ok().and_then(|e| e.to_int::<u32>().ok()).map(|v| v as usize);
        Ok(SourceRef {
            study_uid: need(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
            series_uid: need(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
            sop_instance_uid: need(tags::SOP_INSTANCE_UID, "SOP Instance UID")?,
            sop_class_uid: need(tags::SOP_CLASS_UID, "SOP Class UID")?,
            frame_of_reference_uid: get(tags::FRAME_OF_REFERENCE_UID),
            pixel_spacing,
            size: dim(tags::ROWS).zip(dim(tags::COLUMNS)),
        })
    }
}

/// One segment: a class of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentClass {
    /// Label id in the label map.
    pub id: u8,
    /// Class name (the segment label).
    pub name: String,
    /// Display colour (sRGB).
    pub colour: [u8; 3],
}

impl SegmentClass {
    /// The segments of a class table: every class but its background, in table order.
    pub fn of_table(table: &crate::classes::ClassTable) -> Vec<SegmentClass> {
        table.classes.iter().filter(|c| c.name != table.background).map(|c| SegmentClass { id: c.id, name: c.name.clone(), colour: c.colour }).collect()
    }
}

/// A UID under 2.25 from a hash of `parts`.
fn uid(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let n = u128::from_le_bytes(h.finalize().as_bytes()[..16].try_into().expect("16 bytes"));
    format!("2.25.{}", n >> 1)
}

fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn empty(tag: Tag, vr: VR) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

fn us(tag: Tag, v: &[u16]) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::U16(v.iter().copied().collect()))
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(vec![text(tags::CODE_VALUE, VR::SH, value), text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme), text(tags::CODE_MEANING, VR::LO, meaning)])
}

/// sRGB to the DICOM scaling of CIELab (PS3.3 C.10.7.1.1: L 0..100 -> 0..65535, a and b -128..127 ->
/// 0..65535), D65 white.
pub fn rgb_to_dicom_lab([r, g, b]: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let (r, g, b) = (lin(r), lin(g), lin(b));
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let f = |t: f64| if t > 216.0 / 24389.0 { t.cbrt() } else { (24389.0 / 27.0 * t + 16.0) / 116.0 };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let (l, a, bb) = (116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz));
    let scale = |v: f64, lo: f64, hi: f64| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 65535.0).round() as u16;
    [scale(l, 0.0, 100.0), scale(a, -128.0, 127.0), scale(bb, -128.0, 127.0)]
}

/// Packs frames of 0/1 pixels, 1 bit each, least significant bit first, frames back to back with no
/// padding between them (PS3.5 8.1.1); the whole is padded to an even length.
pub fn pack_bits(frames: impl Iterator<Item = bool>) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut byte, mut n) = (0u8, 0);
    for on in frames {
        byte |= (on as u8) << n;
        n += 1;
        if n == 8 {
            out.push(byte);
            (byte, n) = (0, 0);
        }
    }
    if n > 0 {
        out.push(byte);
    }
    if out.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// Writes the SEG of `labels` (class ids) for the image `source` refers to, with one segment per class
/// of `classes` (background left out by the caller). `algorithm` names what made it.
pub fn write_seg(labels: &Tensor2<u8>, classes: &[SegmentClass], source: &SourceRef, algorithm: &str) -> Result<Vec<u8>> {
    if classes.is_empty() {
        return Err(item_err!("a DICOM SEG needs at least one segment class"));
    }
    if labels.height > u16::MAX as usize || labels.width > u16::MAX as usize {
        return Err(item_err!("label map too large for DICOM rows/columns: {} x {}", labels.height, labels.width));
    }
    // LO values hold 64 characters at most
    let algorithm: String = algorithm.chars().take(64).collect();
    let algorithm = algorithm.as_str();
    // the same prediction, segments and algorithm give the same UIDs; anything else new ones (another
    // class table is another object, which an archive must not take for a replacement)
    let mut h = blake3::Hasher::new();
    h.update(&labels.data);
    for c in classes {
        h.update(&[c.id]);
        h.update(&c.colour);
        h.update(&(c.name.len() as u64).to_le_bytes());
        h.update(c.name.as_bytes());
    }
    let content = h.finalize();
    let series_uid = uid(&[b"seg-series", source.sop_instance_uid.as_bytes(), algorithm.as_bytes()]);
    let instance_uid = uid(&[b"seg-instance", source.sop_instance_uid.as_bytes(), algorithm.as_bytes(), content.as_bytes()]);
    let frame_of_reference = source.frame_of_reference_uid.clone().unwrap_or_else(|| uid(&[b"seg-frame-of-reference", source.sop_instance_uid.as_bytes()]));
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |e: DataElement<InMemDicomObject>| {
        obj.put(e);
    };
    put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    put(text(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE));
    put(text(tags::SOP_INSTANCE_UID, VR::UI, &instance_uid));
    // Patient and General Study: only the study's UID (see the module doc)
    for (tag, vr) in [(tags::PATIENT_NAME, VR::PN), (tags::PATIENT_ID, VR::LO), (tags::PATIENT_BIRTH_DATE, VR::DA), (tags::PATIENT_SEX, VR::CS)] {
        put(empty(tag, vr));
    }
    put(text(tags::STUDY_INSTANCE_UID, VR::UI, &source.study_uid));
    for (tag, vr) in [(tags::STUDY_DATE, VR::DA), (tags::STUDY_TIME, VR::TM), (tags::REFERRING_PHYSICIAN_NAME, VR::PN), (tags::STUDY_ID, VR::SH), (tags::ACCESSION_NUMBER, VR::SH)] {
        put(empty(tag, vr));
    }
    // General Series, Segmentation Series, Frame of Reference, equipment
    put(text(tags::MODALITY, VR::CS, "SEG"));
    put(text(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid));
    put(text(tags::SERIES_NUMBER, VR::IS, "9901"));
    put(text(tags::SERIES_DESCRIPTION, VR::LO, "mammoflow segmentation"));
    put(text(tags::FRAME_OF_REFERENCE_UID, VR::UI, &frame_of_reference));
    put(empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO));
    put(text(tags::MANUFACTURER, VR::LO, "mammoflow"));
    put(text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "mammoflow"));
    put(text(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"));
    put(text(tags::SOFTWARE_VERSIONS, VR::LO, env!("CARGO_PKG_VERSION")));
    // General Image, Segmentation Image, Image Pixel
    put(text(tags::INSTANCE_NUMBER, VR::IS, "1"));
    put(text(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"));
    put(text(tags::CONTENT_DATE, VR::DA, "20000101"));
    put(text(tags::CONTENT_TIME, VR::TM, "000000"));
    put(text(tags::CONTENT_LABEL, VR::CS, "MAMMOFLOW"));
    put(text(tags::CONTENT_DESCRIPTION, VR::LO, algorithm));
    put(empty(tags::CONTENT_CREATOR_NAME, VR::PN));
    put(text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"));
    put(text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"));
    put(us(tags::SAMPLES_PER_PIXEL, &[1]));
    put(text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    put(us(tags::ROWS, &[labels.height as u16]));
    put(us(tags::COLUMNS, &[labels.width as u16]));
    put(us(tags::BITS_ALLOCATED, &[1]));
    put(us(tags::BITS_STORED, &[1]));
    put(us(tags::HIGH_BIT, &[0]));
    put(us(tags::PIXEL_REPRESENTATION, &[0]));
    // segments
    let segments = classes
        .iter()
        .enumerate()
        .map(|(k, c)| {
            item(vec![
                us(tags::SEGMENT_NUMBER, &[k as u16 + 1]),
                text(tags::SEGMENT_LABEL, VR::LO, &c.name),
                text(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, algorithm),
                seq(tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![code("91723000", "SCT", "Anatomical Structure")]),
                seq(tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![code(&format!("C{}", c.id), "99MMFLOW", &c.name)]),
                us(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, &rgb_to_dicom_lab(c.colour)),
            ])
        })
        .collect();
    put(seq(tags::SEGMENT_SEQUENCE, segments));
    // Multi-frame Dimension: frames are indexed by segment number
    let dim_org = uid(&[b"seg-dimensions", instance_uid.as_bytes()]);
    put(seq(tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![item(vec![text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_org)])]));
    put(text(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "2D"));
    let pointer = |t: Tag| DataElement::new(t, VR::AT, PrimitiveValue::Tags([tags::REFERENCED_SEGMENT_NUMBER].into_iter().collect()));
    put(seq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![item(vec![
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_org),
            pointer(tags::DIMENSION_INDEX_POINTER),
            DataElement::new(tags::FUNCTIONAL_GROUP_POINTER, VR::AT, PrimitiveValue::Tags([tags::SEGMENT_IDENTIFICATION_SEQUENCE].into_iter().collect())),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, "Segment Number"),
        ])],
    ));
    // Multi-frame Functional Groups
    let (row_mm, col_mm) = source.pixel_spacing.unwrap_or((1.0, 1.0));
    put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![seq(tags::PIXEL_MEASURES_SEQUENCE, vec![item(vec![text(tags::PIXEL_SPACING, VR::DS, &format!("{row_mm}\\{col_mm}")), text(tags::SLICE_THICKNESS, VR::DS, "1")])])])],
    ));
    // every frame names the image it was derived from (readers index frames by source image this way)
    let derivation = || {
        seq(
            tags::DERIVATION_IMAGE_SEQUENCE,
            vec![item(vec![
                seq(
                    tags::SOURCE_IMAGE_SEQUENCE,
                    vec![item(vec![
                        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &source.sop_class_uid),
                        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &source.sop_instance_uid),
                        seq(tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![code("121322", "DCM", "Source image for image processing operation")]),
                        // the label map is on the image's own pixel grid
                        text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"),
                    ])],
                ),
                seq(tags::DERIVATION_CODE_SEQUENCE, vec![code("113076", "DCM", "Segmentation")]),
            ])],
        )
    };
    let per_frame = (0..classes.len())
        .map(|k| {
            item(vec![
                derivation(),
                seq(tags::FRAME_CONTENT_SEQUENCE, vec![item(vec![DataElement::new(tags::DIMENSION_INDEX_VALUES, VR::UL, PrimitiveValue::U32([k as u32 + 1].into_iter().collect()))])]),
                seq(tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![item(vec![us(tags::REFERENCED_SEGMENT_NUMBER, &[k as u16 + 1])])]),
            ])
        })
        .collect();
    put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    put(text(tags::NUMBER_OF_FRAMES, VR::IS, &classes.len().to_string()));
    // Common Instance Reference
    put(seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(vec![
            text(tags::SERIES_INSTANCE_UID, VR::UI, &source.series_uid),
            seq(
                tags::REFERENCED_INSTANCE_SEQUENCE,
                vec![item(vec![text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &source.sop_class_uid), text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &source.sop_instance_uid)])],
            ),
        ])],
    ));
    let bits = pack_bits(classes.iter().flat_map(|c| labels.data.iter().map(move |&v| v == c.id)));
    put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(bits.into())));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(super::write::EXPLICIT_LE).implementation_class_uid("2.25.1234567890123456789"))
        .map_err(|e| item_err!("building the DICOM meta group: {e}"))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| item_err!("writing DICOM SEG: {e}"))?;
    Ok(out)
}

/// A SEG read back: segment labels and, per frame, its segment number and pixels (for tests and
/// `verify`-style checks).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSeg {
    /// Segment labels, by segment number - 1.
    pub labels: Vec<String>,
    /// Per frame: referenced segment number and 0/1 pixels.
    pub frames: Vec<(u16, Vec<u8>)>,
    /// The referenced source `(study, series, SOP instance)` UIDs.
    pub references: (String, String, String),
    /// Rows and columns.
    pub size: (usize, usize),
}

/// Reads a SEG written by [`write_seg`] (or any BINARY SEG with one segment per frame) with dicom-rs.
pub fn read_seg(bytes: &[u8]) -> Result<ReadSeg> {
    let obj = dicom_object::from_reader(std::io::Cursor::new(bytes.get(128..).unwrap_or_default())).map_err(|e| item_err!("not a DICOM file: {e}"))?;
    let s = |o: &InMemDicomObject, t: Tag| o.element(t).ok().and_then(|e| e.to_str().ok()).map(|v| v.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default();
    let n = |o: &InMemDicomObject, t: Tag| o.element(t).ok().and_then(|e| e.to_int::<u32>().ok()).unwrap_or(0) as usize;
    let items = |o: &InMemDicomObject, t: Tag| o.element(t).ok().and_then(|e| e.items().map(|i| i.to_vec())).unwrap_or_default();
    let (rows, cols) = (n(&obj, tags::ROWS), n(&obj, tags::COLUMNS));
    let labels = items(&obj, tags::SEGMENT_SEQUENCE).iter().map(|i| s(i, tags::SEGMENT_LABEL)).collect();
    let data = obj.element(tags::PIXEL_DATA).map_err(|e| item_err!("no pixel data: {e}"))?.to_bytes().map_err(|e| item_err!("pixel data: {e}"))?.into_owned();
    let per_frame = items(&obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let frames = per_frame
        .iter()
        .enumerate()
        .map(|(f, g)| {
            let seg = items(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE).first().map_or(0, |i| n(i, tags::REFERENCED_SEGMENT_NUMBER)) as u16;
            let px = (0..rows * cols).map(|p| {
                let bit = f * rows * cols + p;
                data.get(bit / 8).map_or(0, |b| (b >> (bit % 8)) & 1)
            });
            (seg, px.collect())
        })
        .collect();
    let series = items(&obj, tags::REFERENCED_SERIES_SEQUENCE);
    let first = series.first();
    let instance = first.map(|i| items(i, tags::REFERENCED_INSTANCE_SEQUENCE)).unwrap_or_default();
    let references = (s(&obj, tags::STUDY_INSTANCE_UID), first.map(|i| s(i, tags::SERIES_INSTANCE_UID)).unwrap_or_default(), instance.first().map(|i| s(i, tags::REFERENCED_SOP_INSTANCE_UID)).unwrap_or_default());
    Ok(ReadSeg { labels, frames, references, size: (rows, cols) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_pack_lsb_first_across_frame_boundaries() {
        // 5 pixels per frame, 2 frames: 10 bits in 2 bytes, the second frame starting at bit 5
        let bits = pack_bits([true, false, false, false, false, false, true, true, false, true].into_iter());
        assert_eq!(bits, vec![0b1100_0001, 0b0000_0010]);
        assert_eq!(pack_bits([true].into_iter()), vec![1, 0], "padded to an even length");
    }

    #[test]
    fn colours_become_dicom_lab() {
        // white: L = 100, a = b = 0 (0 maps to 128/255 of the range), within rounding of the white point
        let white = rgb_to_dicom_lab([255, 255, 255]);
        assert!(white[0] == 65535 && white[1].abs_diff(32896) <= 2 && white[2].abs_diff(32896) <= 2, "{white:?}");
        assert_eq!(rgb_to_dicom_lab([0, 0, 0])[0], 0);
        let red = rgb_to_dicom_lab([255, 0, 0]);
        assert!(red[1] > 50000, "red has a large positive a*: {red:?}");
    }

    #[test]
    fn a_written_seg_reads_back_with_its_frames_labels_and_references_and_no_patient_data() {
        let labels = Tensor2 { height: 3, width: 5, data: vec![0, 1, 1, 2, 0, 0, 1, 2, 2, 0, 3, 3, 0, 0, 0] };
        let classes = vec![
            SegmentClass { id: 1, name: "adipose".into(), colour: [255, 225, 25] },
            SegmentClass { id: 2, name: "fibroglandular".into(), colour: [60, 180, 75] },
            SegmentClass { id: 3, name: "pectoral".into(), colour: [0, 130, 200] },
        ];
        let source = SourceRef { study_uid: "1.2.3".into(), series_uid: "1.2.3.4".into(), sop_instance_uid: "1.2.3.4.5".into(), sop_class_uid: "1.2.840.10008.5.1.4.1.1.1.2".into(), frame_of_reference_uid: None, pixel_spacing: Some((0.1, 0.1)), size: Some((3, 5)) };
        let bytes = write_seg(&labels, &classes, &source, "unit test").unwrap();
        assert_eq!(write_seg(&labels, &classes, &source, "unit test").unwrap(), bytes, "deterministic");
        let back = read_seg(&bytes).unwrap();
        assert_eq!(back.size, (3, 5));
        assert_eq!(back.labels, ["adipose", "fibroglandular", "pectoral"]);
        assert_eq!(back.references, ("1.2.3".to_string(), "1.2.3.4".to_string(), "1.2.3.4.5".to_string()));
        for (k, (seg, px)) in back.frames.iter().enumerate() {
            assert_eq!(*seg as usize, k + 1);
            let want: Vec<u8> = labels.data.iter().map(|&v| (v == classes[k].id) as u8).collect();
            assert_eq!(px, &want, "frame {k}");
        }
        let obj = dicom_object::from_reader(std::io::Cursor::new(&bytes[128..])).unwrap();
        for t in [tags::PATIENT_NAME, tags::PATIENT_ID, tags::PATIENT_BIRTH_DATE] {
            assert_eq!(obj.element(t).unwrap().to_str().unwrap().trim(), "", "{t:?} must be empty");
        }
        let instance = obj.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap().to_string();
        assert_ne!(instance, "1.2.3.4.5");
        // another colour is another object: a new instance UID, the same series
        let mut recoloured = classes.clone();
        recoloured[0].colour = [255, 225, 26];
        let other = dicom_object::from_reader(std::io::Cursor::new(write_seg(&labels, &recoloured, &source, "unit test").unwrap()[128..].to_vec())).unwrap();
        assert_ne!(other.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap(), instance);
        assert_eq!(other.element(tags::SERIES_INSTANCE_UID).unwrap().to_str().unwrap(), obj.element(tags::SERIES_INSTANCE_UID).unwrap().to_str().unwrap());
    }
}
