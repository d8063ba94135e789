//! Wire tests: every `gui.json` vector both ways, handshake words, strict lengths, dump and
//! clipboard limits, and parse/emit properties.

use super::*;
use crate::framing::FrameReader;
use alloc::vec;
use alloc::vec::Vec;
use proptest::prelude::*;
use test_vectors::Vector;

fn u(v: &Vector, f: &str) -> u32 {
    v.u64(f) as u32
}
fn i(v: &Vector, f: &str) -> i32 {
    v.i64(f) as i32
}

/// Builds the message a vector describes from its field list only.
fn from_fields(v: &Vector, words: &mut Vec<u32>) -> Message<'static> {
    let ty = MsgType::from(u(v, "msg_hdr.type"));
    let leak = |b: Vec<u8>| -> &'static [u8] { alloc::boxed::Box::leak(b.into_boxed_slice()) };
    match ty {
        MsgType::Keypress => Message::Keypress(Keypress {
            ty: u(v, "type"),
            x: i(v, "x"),
            y: i(v, "y"),
            state: u(v, "state"),
            keycode: u(v, "keycode"),
        }),
        MsgType::Button => Message::Button(Button {
            ty: u(v, "type"),
            x: i(v, "x"),
            y: i(v, "y"),
            state: u(v, "state"),
            button: u(v, "button"),
        }),
        MsgType::Motion => Message::Motion(Motion {
            x: i(v, "x"),
            y: i(v, "y"),
            state: u(v, "state"),
            is_hint: u(v, "is_hint"),
        }),
        MsgType::Crossing => Message::Crossing(Crossing {
            ty: u(v, "type"),
            x: i(v, "x"),
            y: i(v, "y"),
            state: u(v, "state"),
            mode: u(v, "mode"),
            detail: u(v, "detail"),
            focus: u(v, "focus"),
        }),
        MsgType::Focus => Message::Focus(Focus {
            ty: u(v, "type"),
            mode: u(v, "mode"),
            detail: u(v, "detail"),
        }),
        MsgType::Resize => Message::Resize(Resize {
            width: u(v, "width"),
            height: u(v, "height"),
        }),
        MsgType::Create => Message::Create(Create {
            x: i(v, "x"),
            y: i(v, "y"),
            width: u(v, "width"),
            height: u(v, "height"),
            parent: u(v, "parent"),
            override_redirect: u(v, "override_redirect"),
        }),
        MsgType::Destroy => Message::Destroy,
        MsgType::Map => Message::Map(MapInfo {
            transient_for: u(v, "transient_for"),
            override_redirect: u(v, "override_redirect"),
        }),
        MsgType::Unmap => Message::Unmap,
        MsgType::Configure => Message::Configure(Configure {
            x: i(v, "x"),
            y: i(v, "y"),
            width: u(v, "width"),
            height: u(v, "height"),
            override_redirect: u(v, "override_redirect"),
        }),
        MsgType::MfnDump => {
            *words = v.array("mfns").into_iter().map(|x| x as u32).collect();
            let w: &'static [u32] = alloc::boxed::Box::leak(words.clone().into_boxed_slice());
            Message::MfnDump(
                ShmCmd {
                    shmid: u(v, "shmid"),
                    width: u(v, "width"),
                    height: u(v, "height"),
                    bpp: u(v, "bpp"),
                    off: u(v, "off"),
                    num_mfn: u(v, "num_mfn"),
                    domid: u(v, "domid"),
                },
                Words::Values(w),
            )
        }
        MsgType::ShmImage => Message::ShmImage(ShmImage {
            x: i(v, "x"),
            y: i(v, "y"),
            width: u(v, "width"),
            height: u(v, "height"),
        }),
        MsgType::Close => Message::Close,
        MsgType::Execute => {
            let mut cmd = vec![0u8; EXECUTE_LEN];
            let s = v.str("cmd").as_bytes();
            cmd[..s.len()].copy_from_slice(s);
            Message::Execute(leak(cmd))
        }
        MsgType::ClipboardReq => Message::ClipboardReq,
        MsgType::ClipboardData => Message::ClipboardData(leak(v.raw("data"))),
        MsgType::WmName => Message::WmName(WmName::new(v.str("data"))),
        MsgType::KeymapNotify => Message::KeymapNotify(v.raw("keys").try_into().unwrap()),
        MsgType::Dock => Message::Dock,
        MsgType::WindowHints => Message::WindowHints(WindowHints {
            flags: u(v, "flags"),
            min_width: u(v, "min_width"),
            min_height: u(v, "min_height"),
            max_width: u(v, "max_width"),
            max_height: u(v, "max_height"),
            width_inc: u(v, "width_inc"),
            height_inc: u(v, "height_inc"),
            base_width: u(v, "base_width"),
            base_height: u(v, "base_height"),
        }),
        MsgType::WindowFlags => Message::WindowFlags(WindowFlags {
            flags_set: u(v, "flags_set"),
            flags_unset: u(v, "flags_unset"),
        }),
        MsgType::WmClass => Message::WmClass(WmClass::new(v.str("res_class"), v.str("res_name"))),
        MsgType::WindowDump => {
            let w: Vec<u32> = v.array("refs").into_iter().map(|x| x as u32).collect();
            let w: &'static [u32] = alloc::boxed::Box::leak(w.into_boxed_slice());
            Message::WindowDump(
                WindowDumpHdr {
                    ty: u(v, "dump.type"),
                    width: u(v, "dump.width"),
                    height: u(v, "dump.height"),
                    bpp: u(v, "dump.bpp"),
                },
                Words::Values(w),
            )
        }
        MsgType::Cursor => Message::Cursor(Cursor {
            cursor: u(v, "cursor"),
        }),
        MsgType::WindowDumpAck => Message::WindowDumpAck,
        MsgType::Unknown(t) => panic!("{}: unknown type {t}", v.name),
    }
}

#[test]
fn every_message_vector_emits_and_parses() {
    let vf = test_vectors::load("gui.json");
    assert_eq!(vf.constant("sizeof(struct msg_hdr)") as usize, HEADER_LEN);
    assert_eq!(
        vf.constant("QUBES_GUID_PROTOCOL_VERSION") as u32,
        Version::V1_8.0
    );
    assert_eq!(vf.constant("MAX_GRANT_REFS_COUNT") as u32, MAX_GRANT_REFS);
    assert_eq!(vf.constant("MAX_WINDOW_WIDTH") as u32, MAX_WINDOW_WIDTH);
    assert_eq!(vf.constant("MAX_WINDOW_HEIGHT") as u32, MAX_WINDOW_HEIGHT);
    assert_eq!(
        vf.constant("MAX_CLIPBOARD_SIZE") as usize,
        MAX_CLIPBOARD_OLD
    );
    assert_eq!(
        vf.constant("QUBES_MAX_MSG_WINDOW_DUMP_LEN") as usize,
        HEADER_LEN + 16 + 4 * 98304
    );
    let mut seen = alloc::collections::BTreeSet::new();
    for v in vf.vectors.iter().filter(|v| v.has("msg_hdr.type")) {
        let bytes = v.bytes();
        let mut words = Vec::new();
        let msg = from_fields(v, &mut words);
        let window = WindowId(u(v, "msg_hdr.window"));
        assert_eq!(msg.to_vec(window).unwrap(), bytes, "{}: emit", v.name);
        let (w, parsed) = Message::parse(&bytes).unwrap();
        assert_eq!((w, parsed), (window, msg), "{}: parse", v.name);
        assert_eq!(
            msg.body_len() as u64,
            v.u64("msg_hdr.untrusted_len"),
            "{}",
            v.name
        );
        let ty = u32::from(msg.msg_type());
        if let Some(n) = msg.msg_type().fixed_len() {
            let sname = v.struct_.split(" + ").nth(1);
            if let Some(s) = sname.filter(|s| !s.contains('[') && *s != "bytes") {
                assert_eq!(
                    vf.constant(&alloc::format!("sizeof(struct {s})")) as usize,
                    n,
                    "{}",
                    v.name
                );
            }
        }
        seen.insert(ty);
    }
    assert_eq!(
        seen,
        (124..=149).collect(),
        "every type 124..149 has a vector"
    );
}

#[test]
fn handshake_words_emit_and_parse() {
    let vf = test_vectors::load("gui.json");
    for name in [
        "msg_version 1.7 from agent",
        "msg_version 1.7 from daemon",
        "msg_version 1.1 from agent",
    ] {
        let v = vf.get(name);
        let ver = parse_version(&v.bytes()).unwrap();
        assert_eq!(ver.0 as u64, v.u64("version"), "{name}");
        assert_eq!(&ver.0.to_le_bytes()[..], &v.bytes()[..], "{name}");
    }
    assert_eq!(
        parse_version(&vf.get("msg_version 1.7 from agent").bytes()),
        Ok(Version::V1_7)
    );
    let v = vf.get("msg_xconf 1920x1080");
    let x = XConf::parse(&v.bytes()).unwrap();
    assert_eq!(
        x,
        XConf {
            w: u(v, "w"),
            h: u(v, "h"),
            depth: u(v, "depth"),
            mem: u(v, "mem")
        }
    );
    assert_eq!(XConf::for_screen(1920, 1080), x);
    let mut out = [0; 16];
    x.emit(&mut out);
    assert_eq!(&out[..], &v.bytes()[..]);
}

#[test]
fn both_directions_of_destroy_configure_clipboard_parse() {
    let vf = test_vectors::load("gui.json");
    let (d, c, k) = (
        vf.get("MSG_DESTROY ack from daemon").bytes(),
        vf.get("MSG_CONFIGURE from daemon").bytes(),
        vf.get("MSG_CLIPBOARD_DATA from daemon").bytes(),
    );
    let (_, d) = Message::parse(&d).unwrap();
    assert_eq!(d, Message::Destroy);
    let (w, c) = Message::parse(&c).unwrap();
    assert_eq!(w, WindowId(1));
    assert_eq!(
        c,
        Message::Configure(Configure {
            x: -8,
            y: 31,
            width: 1280,
            height: 720,
            override_redirect: 0
        })
    );
    let (w, c) = Message::parse(&k).unwrap();
    assert_eq!(
        (w, c),
        (WindowId(29360135), Message::ClipboardData(b"pasted text"))
    );
}

#[test]
fn fixed_body_of_wrong_size_is_refused() {
    let mut b = Message::Configure(Configure::default())
        .to_vec(WindowId(1))
        .unwrap();
    // mirage's CONFIGURE declares 36.
    b[8] = 36;
    b.resize(12 + 36, 0);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::BodyLength {
            expected: 20,
            got: 36
        })
    );
    b.truncate(12 + 20);
    assert_eq!(
        Message::parse(&b),
        Err(WireError::LengthMismatch {
            declared: 36,
            got: 20
        })
    );
}

#[test]
fn strict_framing_at_1_6_refuses_length_mismatch() {
    let mut h = Message::Configure(Configure::default())
        .to_vec(WindowId(1))
        .unwrap();
    h[8] = 36;
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Agent,
        version: Version::V1_8,
    });
    assert!(matches!(r.push(&h[..12]), Err(FrameError::BadHeader(_))));
    // Below 1.6 the daemon reads the type's size whatever the header says.
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Agent,
        version: Version::V1_4,
    });
    assert_eq!(r.push(&h[..12]), Ok(12));
    assert_eq!(r.wanted(), 20);
}

#[test]
fn unknown_type_from_agent_is_fatal_and_from_daemon_is_bounded() {
    let mut h = [0u8; 12];
    h[0] = 200;
    h[8..].copy_from_slice(&8u32.to_le_bytes());
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Agent,
        version: Version::V1_8,
    });
    assert!(r.push(&h).is_err());
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Daemon,
        version: Version::V1_8,
    });
    assert_eq!(r.push(&h), Ok(12));
    assert_eq!(r.wanted(), 8);
    h[8..].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Daemon,
        version: Version::V1_8,
    });
    assert!(matches!(
        r.push(&h),
        Err(FrameError::TooLong {
            max: MAX_UNKNOWN_BODY,
            ..
        })
    ));
}

#[test]
fn clipboard_over_the_version_limit_is_refused_before_allocation() {
    let mut h = [0u8; 12];
    h[0] = 140;
    h[8..].copy_from_slice(&65001u32.to_le_bytes());
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Agent,
        version: Version::V1_7,
    });
    assert_eq!(
        r.push(&h),
        Err(FrameError::TooLong {
            len: 65001,
            max: MAX_CLIPBOARD_OLD
        })
    );
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Agent,
        version: Version::V1_8,
    });
    assert_eq!(r.push(&h), Ok(12));
}

#[test]
fn clipboard_length_before_1_2_is_in_the_window_field() {
    let mut h = [0u8; 12];
    h[0] = 140;
    h[4..8].copy_from_slice(&5u32.to_le_bytes());
    let mut r = FrameReader::new(GuiFraming {
        sender: Sender::Agent,
        version: Version::V1_1,
    });
    assert_eq!(r.push(&h), Ok(12));
    assert_eq!(r.wanted(), 5);
}

#[test]
fn dump_page_count_rule() {
    assert_eq!(dump_pages(64, 48), 3);
    assert_eq!(dump_pages(32, 32), 1);
    assert_eq!(dump_pages(33, 32), 2);
    assert_eq!(
        dump_pages(MAX_WINDOW_WIDTH, MAX_WINDOW_HEIGHT),
        u64::from(MAX_GRANT_REFS)
    );
    let hdr = WindowDumpHdr {
        ty: 0,
        width: 64,
        height: 48,
        bpp: 32,
    };
    assert_eq!(check_dump(&hdr, 3), Ok(()));
    assert!(matches!(check_dump(&hdr, 2), Err(WireError::DumpRefs(8))));
    let big = WindowDumpHdr {
        width: MAX_WINDOW_WIDTH + 1,
        ..hdr
    };
    assert!(matches!(
        check_dump(&big, 98304),
        Err(WireError::DumpTooLarge { .. })
    ));
    assert!(matches!(
        check_dump(&WindowDumpHdr { ty: 1, ..hdr }, 3),
        Err(WireError::DumpType(1))
    ));
    assert!(matches!(
        check_dump(&hdr, 98305),
        Err(WireError::DumpRefs(_))
    ));
    let refs = [1u32, 2];
    assert!(Message::WindowDump(hdr, Words::Values(&refs))
        .to_vec(WindowId(1))
        .is_err());
}

#[test]
fn dump_refs_not_multiple_of_four_is_refused() {
    let refs = [1u32, 2, 3];
    let hdr = WindowDumpHdr {
        ty: 0,
        width: 64,
        height: 48,
        bpp: 32,
    };
    let mut b = Message::WindowDump(hdr, Words::Values(&refs))
        .to_vec(WindowId(1))
        .unwrap();
    b.push(0);
    b[8] += 1;
    assert_eq!(Message::parse(&b), Err(WireError::DumpRefs(13)));
}

#[test]
fn mfndump_count_must_match_body() {
    let frames = [1u32, 2, 3];
    let cmd = ShmCmd {
        num_mfn: 3,
        ..ShmCmd::default()
    };
    let mut b = Message::MfnDump(cmd, Words::Values(&frames))
        .to_vec(WindowId(1))
        .unwrap();
    b[12 + 20] = 4;
    assert_eq!(Message::parse(&b), Err(WireError::MfnCount(4)));
    b[12 + 20] = 0xff;
    b[12 + 23] = 0xff;
    assert!(matches!(Message::parse(&b), Err(WireError::MfnCount(_))));
}

#[test]
fn wmname_is_sanitised_truncated_and_nul_terminated() {
    let t = WmName::new("caf\u{e9}\x07 ok");
    assert_eq!(t.as_str(), "caf___ ok");
    let long = "x".repeat(300);
    let t = WmName::new(&long);
    assert_eq!(t.as_str().len(), 127);
    let b = Message::WmName(t).to_vec(WindowId(1)).unwrap();
    assert_eq!(b.len(), 12 + 128);
    assert_eq!(b[12 + 127], 0);
    // A peer's title with garbage after the NUL and control bytes before it.
    let mut body = [b'A'; 128];
    body[1] = 0x1b;
    body[5] = 0;
    let frame = [&b[..12], &body[..]].concat();
    let (_, m) = Message::parse(&frame).unwrap();
    assert_eq!(m, Message::WmName(WmName::new("A_AAA")));
}

#[test]
fn wmclass_fields_ignore_bytes_after_nul() {
    let mut body = [b'z'; 128];
    body[3] = 0;
    body[64 + 2] = 0;
    let m = Message::parse_body(MsgType::WmClass, &body).unwrap();
    assert_eq!(m, Message::WmClass(WmClass::new("zzz", "zz")));
}

#[test]
fn bad_major_version_is_refused() {
    assert_eq!(
        parse_version(&0x0002_0008u32.to_le_bytes()),
        Err(WireError::BadMajor(2))
    );
    assert_eq!(
        parse_version(&[1, 0]),
        Err(WireError::Truncated { needed: 4 })
    );
}

fn arb_message() -> impl Strategy<Value = (u32, Message<'static>)> {
    let w = any::<[u32; 9]>();
    (
        any::<u32>(),
        0usize..22,
        w,
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(win, k, w, bytes)| {
            let i = |n: usize| w[n] as i32;
            let bytes: &'static [u8] = alloc::boxed::Box::leak(bytes.into_boxed_slice());
            let m = match k {
                0 => Message::Keypress(Keypress {
                    ty: w[0],
                    x: i(1),
                    y: i(2),
                    state: w[3],
                    keycode: w[4],
                }),
                1 => Message::Button(Button {
                    ty: w[0],
                    x: i(1),
                    y: i(2),
                    state: w[3],
                    button: w[4],
                }),
                2 => Message::Motion(Motion {
                    x: i(0),
                    y: i(1),
                    state: w[2],
                    is_hint: w[3],
                }),
                3 => Message::Crossing(Crossing {
                    ty: w[0],
                    x: i(1),
                    y: i(2),
                    state: w[3],
                    mode: w[4],
                    detail: w[5],
                    focus: w[6],
                }),
                4 => Message::Focus(Focus {
                    ty: w[0],
                    mode: w[1],
                    detail: w[2],
                }),
                5 => Message::Create(Create {
                    x: i(0),
                    y: i(1),
                    width: w[2],
                    height: w[3],
                    parent: w[4],
                    override_redirect: w[5],
                }),
                6 => Message::Configure(Configure {
                    x: i(0),
                    y: i(1),
                    width: w[2],
                    height: w[3],
                    override_redirect: w[4],
                }),
                7 => Message::Map(MapInfo {
                    transient_for: w[0],
                    override_redirect: w[1],
                }),
                8 => Message::ShmImage(ShmImage {
                    x: i(0),
                    y: i(1),
                    width: w[2],
                    height: w[3],
                }),
                9 => Message::WindowHints(WindowHints {
                    flags: w[0],
                    min_width: w[1],
                    min_height: w[2],
                    max_width: w[3],
                    max_height: w[4],
                    width_inc: w[5],
                    height_inc: w[6],
                    base_width: w[7],
                    base_height: w[8],
                }),
                10 => Message::WindowFlags(WindowFlags {
                    flags_set: w[0],
                    flags_unset: w[1],
                }),
                11 => Message::Cursor(Cursor { cursor: w[0] }),
                12 => Message::ClipboardData(bytes),
                13 => Message::WmName(WmName::new(core::str::from_utf8(bytes).unwrap_or("t"))),
                14 => Message::KeymapNotify([bytes.len() as u8; 32]),
                15 => {
                    let (wd, ht) = (w[0] % 200, w[1] % 200);
                    let n = dump_pages(wd, ht) as usize;
                    let refs: &'static [u32] = alloc::boxed::Box::leak(
                        w.repeat(n / 9 + 1)[..n].to_vec().into_boxed_slice(),
                    );
                    Message::WindowDump(
                        WindowDumpHdr {
                            ty: 0,
                            width: wd,
                            height: ht,
                            bpp: 32,
                        },
                        Words::Values(refs),
                    )
                }
                16 => Message::Destroy,
                17 => Message::Unmap,
                18 => Message::Close,
                19 => Message::ClipboardReq,
                20 => Message::Dock,
                _ => Message::WindowDumpAck,
            };
            (win, m)
        })
}

proptest! {
    #[test]
    fn parse_of_emit_is_identity((win, m) in arb_message()) {
        let b = m.to_vec(WindowId(win)).unwrap();
        prop_assert_eq!(Message::parse(&b).unwrap(), (WindowId(win), m));
    }

    #[test]
    fn parse_never_panics(ty in 120u32..152, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::parse_body(MsgType::from(ty), &body);
    }
}
