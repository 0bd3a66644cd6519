//! Bad DICOM input, one file each, made by the test itself: every one is a failed row with a clear
//! message naming the file and the problem, and the good file next to them is ingested. Also the phantom's
//! DICOM output read back exactly.

mod util;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use mammoflow::dicom::write::{write_mg, MgSpec};
use mammoflow::dicom::{decode, open_bytes, DecodeOptions, VoiChoice};
use mammoflow::npy::Tensor2;
use util::*;

fn spec(monochrome1: bool, rle: bool, bits: u8) -> MgSpec {
    MgSpec { monochrome1, bits_stored: bits, rle, window: None, laterality: 'L', view: "CC".into(), patient_id: "TEST-1".into(), uid_seed: 9, pixel_spacing: 0.1 }
}

fn image(h: usize, w: usize, bits: u8) -> Tensor2<u16> {
    let max = (1u32 << bits) - 1;
    Tensor2 { height: h, width: w, data: (0..h * w).map(|i| ((i as u64 * 2654435761) % (max as u64 + 1)) as u16).collect() }
}

fn rewrite(bytes: &[u8], ts: Option<&str>, edit: impl FnOnce(&mut InMemDicomObject)) -> Vec<u8> {
    let file = open_bytes(bytes, "fixture").unwrap();
    let ts = ts.map(str::to_string).unwrap_or_else(|| file.meta().transfer_syntax().trim_end_matches('\0').to_string());
    let mut obj = file.into_inner();
    edit(&mut obj);
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts).implementation_class_uid("2.25.1")).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

#[test]
fn phantom_style_dicom_roundtrips_exactly() {
    for (mono1, rle, bits) in [(false, false, 16), (true, false, 12), (false, true, 14), (true, true, 16)] {
        let img = image(37, 29, bits);
        let bytes = write_mg(&img, &spec(mono1, rle, bits)).unwrap();
        let d = decode(&open_bytes(&bytes, "x").unwrap(), "x", DecodeOptions { voi: VoiChoice::None, max_pixels: 1 << 20 }, &[1; 32]).unwrap();
        // MONOCHROME1 files are stored inverted and come back upright
        assert_eq!(d.image.data, img.data, "mono1={mono1} rle={rle} bits={bits}");
    }
}

#[test]
fn deflated_and_implicit_vr_files_decode_to_the_same_pixels() {
    let img = image(33, 21, 16);
    let good = write_mg(&img, &spec(false, false, 16)).unwrap();
    for ts in ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2"] {
        let bytes = rewrite(&good, Some(ts), |_| {});
        let file = open_bytes(&bytes, ts).unwrap();
        assert_eq!(file.meta().transfer_syntax().trim_end_matches('\0'), ts);
        let d = decode(&file, ts, DecodeOptions { voi: VoiChoice::None, max_pixels: 1 << 20 }, &[1; 32]).unwrap();
        assert_eq!(d.image.data, img.data, "{ts}");
    }
}

#[test]
fn bad_dicom_files_fail_alone_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let good = write_mg(&image(64, 48, 14), &spec(false, false, 14)).unwrap();
    let put = |name: &str, bytes: &[u8]| std::fs::write(data.join(name), bytes).unwrap();
    put("good.dcm", &good);
    put("truncated.dcm", &good[..good.len() / 2]);
    put("empty.dcm", b"");
    put("png.dcm", &mammoflow::codec::encode_u8(&Tensor2 { height: 2, width: 2, data: vec![0, 1, 2, 3] }));
    put("no_pixels.dcm", &rewrite(&good, None, |o| {
        o.remove_element(tags::PIXEL_DATA);
    }));
    put("bits.dcm", &rewrite(&good, None, |o| {
        o.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(17u16)));
    }));
    put("short.dcm", &write_mg(&Tensor2 { height: 10, width: 10, data: vec![5; 50] }, &spec(false, false, 14)).unwrap());
    put("mpeg.dcm", &rewrite(&good, Some("1.2.840.10008.1.2.4.100"), |o| {
        o.put(DataElement::new(tags::PIXEL_DATA, VR::OB, Value::PixelSequence(PixelFragmentSequence::new(Vec::<u32>::new(), vec![vec![0u8; 64]]))));
    }));
    put("huge.dcm", &rewrite(&good, None, |o| {
        o.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(65535u16)));
        o.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(65535u16)));
    }));
    put("frames.dcm", &rewrite(&good, None, |o| {
        o.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from("2")));
    }));
    let p = write_pipeline(
        dir.path(),
        "bad.toml",
        "[pipeline]\nname = \"bad\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-dicom\"\nparams = { root = \"data\" }\n",
    );
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((s["computed"].as_u64(), s["failed"].as_u64()), (Some(10), Some(9)), "{s}");
    let rows = manifest_rows(&dir.path().join("ws"), "ingest");
    let err = |id: &str| {
        let r = rows.iter().find(|r| r.item_id == id).unwrap_or_else(|| panic!("no row {id}"));
        let e = r.error.clone().unwrap_or_default();
        assert!(e.contains(&format!("{id}.dcm")), "{id}: the message names the file: {e}");
        e
    };
    assert_eq!(rows.iter().find(|r| r.item_id == "good").unwrap().status, Status::Ok);
    let checks: [(&str, &[&str]); 9] = [
        ("frames", &["multi-frame", "2 frames"]),
        ("truncated", &["truncated or corrupt"]),
        ("empty", &["empty file"]),
        ("png", &["not a DICOM file", "PNG"]),
        ("no_pixels", &["no Pixel Data"]),
        ("bits", &["Bits Stored (17) exceeds Bits Allocated (16)"]),
        ("short", &["pixel data holds 100 bytes", "needs 200"]),
        ("mpeg", &["1.2.840.10008.1.2.4.100", "MPEG2"]),
        ("huge", &["65535 x 65535", "exceeds the limit", "max_pixels"]),
    ];
    for (id, needles) in checks {
        let e = err(id);
        for n in needles {
            assert!(e.contains(n), "{id}: expected {n:?} in {e:?}");
        }
    }
}

#[test]
fn odd_names_link_loops_and_dangling_links_in_a_source_folder() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    let good = write_mg(&image(64, 48, 14), &spec(false, false, 14)).unwrap();
    std::fs::write(data.join("good.dcm"), &good).unwrap();
    // a file name that is not UTF-8 (Latin-1 "café")
    std::fs::write(data.join(std::ffi::OsStr::from_bytes(b"caf\xe9.dcm")), &good).unwrap();
    // a link back up the tree (a loop) and a link to nothing
    std::os::unix::fs::symlink(&data, data.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink(data.join("missing.dcm"), data.join("sub/dangling.dcm")).unwrap();
    let p = write_pipeline(
        dir.path(),
        "odd.toml",
        "[pipeline]\nname = \"odd\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-dicom\"\nparams = { root = \"data\" }\n",
    );
    let st = status_json(&p, &[]);
    assert_eq!(stage(&st, "ingest")["items"], 3, "the loop is walked once: {st}");
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((s["computed"].as_u64(), s["failed"].as_u64()), (Some(3), Some(1)), "{s}");
    let rows = manifest_rows(&dir.path().join("ws"), "ingest");
    let by_id = |id: &str| rows.iter().find(|r| r.item_id == id).unwrap_or_else(|| panic!("no {id} in {rows:?}"));
    assert_eq!(by_id("caf\u{fffd}").status, Status::Ok, "the non-UTF-8 name is read, not \"No such file\"");
    let e = by_id("sub/dangling").error.clone().unwrap();
    assert!(e.contains("sub/dangling.dcm") && e.contains("dangling symbolic link"), "{e}");
}

/// The bytes of a sequence nested `depth` levels deep (explicit VR little endian, undefined lengths).
fn nested_sequences(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..depth {
        out.extend_from_slice(&[0x40, 0x00, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]); // (0040,A730) SQ
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]); // item, undefined length
    }
    for _ in 0..depth {
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]); // item delimiter
        out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]); // sequence delimiter
    }
    out
}

#[test]
fn sequences_nested_ten_thousand_deep_fail_their_item_and_spare_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let good = write_mg(&image(64, 48, 14), &spec(false, false, 14)).unwrap();
    // the data set starts after the preamble, the DICM marker and the file meta group
    let mut cur = std::io::Cursor::new(&good[128..]);
    dicom_object::meta::FileMetaTable::from_reader(&mut cur).unwrap();
    let at = 128 + cur.position() as usize;
    let with = |depth: usize| [&good[..at], &nested_sequences(depth)[..], &good[at..]].concat();
    std::fs::write(data.join("good.dcm"), &good).unwrap();
    std::fs::write(data.join("shallow.dcm"), with(3)).unwrap();
    std::fs::write(data.join("deep.dcm"), with(10_000)).unwrap();
    let p = write_pipeline(
        dir.path(),
        "deep.toml",
        "[pipeline]\nname = \"deep\"\nworkspace = \"ws\"\n[[stage]]\nid = \"ingest\"\nkind = \"ingest-dicom\"\nparams = { root = \"data\" }\n",
    );
    let o = run(&["run", p.to_str().unwrap(), "--json", "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let s = last_json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!((s["computed"].as_u64(), s["failed"].as_u64()), (Some(3), Some(1)), "{s}");
    let rows = manifest_rows(&dir.path().join("ws"), "ingest");
    let deep = rows.iter().find(|r| r.item_id == "deep").unwrap().error.clone().unwrap();
    assert!(deep.contains("deep.dcm") && deep.contains("nest more than 64 levels"), "{deep}");
    assert_eq!(rows.iter().find(|r| r.item_id == "shallow").unwrap().status, Status::Ok);
}
