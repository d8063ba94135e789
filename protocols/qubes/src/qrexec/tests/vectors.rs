//! Every vector of `reference/vectors/qrexec.json`, both ways: emit == hex, parse == fields.

use alloc::vec::Vec;

use test_vectors::Vector;

use crate::framing::FrameReader;
use crate::qrexec::wire::{Exec, Message, MsgHeader, MsgType, QrexecFraming, Stream};
use crate::qrexec::*;

/// A `char[N]` or NUL-terminated `bytes` field's text, without the NUL.
fn text<'a>(v: &'a Vector, name: &str) -> &'a [u8] {
    let s = v.str(name).as_bytes();
    s.strip_suffix(b"\0").unwrap_or(s)
}

/// The message the vector's fields describe; `data` is the vector's payload, if any.
fn expected<'a>(v: &'a Vector, data: &'a [u8]) -> Message<'a> {
    let u32f = |n: &str| v.u64(n) as u32;
    match u32f("msg_header.type") {
        0x300 => Message::Hello {
            version: u32f("peer_info.version"),
        },
        t @ (0x200 | 0x201) => {
            let e = Exec {
                connect_domain: u32f("exec_params.connect_domain"),
                connect_port: u32f("exec_params.connect_port"),
                cmdline: text(v, "exec_params.cmdline"),
            };
            if t == 0x200 {
                Message::ExecCmdline(e)
            } else {
                Message::JustExec(e)
            }
        }
        0x202 => Message::ServiceConnect {
            connect_domain: u32f("exec_params.connect_domain"),
            connect_port: u32f("exec_params.connect_port"),
            request_id: text(v, "service_params.ident"),
        },
        0x203 => Message::ServiceRefused {
            request_id: text(v, "service_params.ident"),
        },
        0x210 => Message::TriggerService {
            service_name: text(v, "trigger_service_params.service_name"),
            target_domain: text(v, "trigger_service_params.target_domain"),
            request_id: text(v, "trigger_service_params.request_id.ident"),
        },
        0x211 => Message::ConnectionTerminated {
            connect_domain: u32f("exec_params.connect_domain"),
            connect_port: u32f("exec_params.connect_port"),
        },
        0x212 => Message::TriggerService3 {
            target_domain: text(v, "trigger_service_params3.target_domain"),
            request_id: text(v, "trigger_service_params3.request_id.ident"),
            service_name: text(v, "trigger_service_params3.service_name"),
        },
        0x213 => Message::TriggerService4 {
            source_domain: text(v, "trigger_service_params4.source_domain"),
            target_domain: text(v, "trigger_service_params4.target_domain"),
            request_id: text(v, "trigger_service_params4.request_id.ident"),
            service_name: text(v, "trigger_service_params4.service_name"),
        },
        0x190 => Message::Data {
            stream: Stream::Stdin,
            data,
        },
        0x191 => Message::Data {
            stream: Stream::Stdout,
            data,
        },
        0x192 => Message::Data {
            stream: Stream::Stderr,
            data,
        },
        0x193 => Message::ExitCode(v.i64("exit_code") as i32),
        t => panic!("{}: message type {t:#x} not covered by the test", v.name),
    }
}

fn payload(v: &Vector) -> Vec<u8> {
    if v.has("data") {
        v.raw("data")
    } else {
        Vec::new()
    }
}

#[test]
fn every_vector_emits_its_hex() {
    let file = test_vectors::load("qrexec.json");
    assert_eq!(file.vectors.len(), 28);
    for v in &file.vectors {
        let data = payload(v);
        let msg = expected(v, &data);
        assert_eq!(msg.buffer_len(), v.size, "{}", v.name);
        let mut buf = alloc::vec![0xAAu8; v.size + 3];
        let n = msg
            .emit(&mut buf)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            &buf[..n],
            &v.bytes()[..],
            "{}: emitted bytes differ",
            v.name
        );
    }
}

#[test]
fn every_vector_parses_to_its_fields() {
    let file = test_vectors::load("qrexec.json");
    for v in &file.vectors {
        let data = payload(v);
        let bytes = v.bytes();
        let got = Message::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(got, expected(v, &data), "{}", v.name);
        let hdr = MsgHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            u32::from(hdr.msg_type()) as u64,
            v.u64("msg_header.type"),
            "{}",
            v.name
        );
        assert_eq!(hdr.len() as u64, v.u64("msg_header.len"), "{}", v.name);
    }
}

#[test]
fn every_vector_frames_whole_at_v3() {
    let file = test_vectors::load("qrexec.json");
    for v in &file.vectors {
        let bytes = v.bytes();
        let mut framing = QrexecFraming::new();
        framing.set_version(PROTOCOL_V3);
        let mut r = FrameReader::new(framing);
        assert_eq!(r.push(&bytes), Ok(bytes.len()), "{}", v.name);
        assert_eq!(r.take().as_deref(), Some(&bytes[..]), "{}", v.name);
    }
}

#[test]
fn constants_match_the_headers() {
    let file = test_vectors::load("qrexec.json");
    let c = |n: &str| file.constant(n);
    assert_eq!(c("QREXEC_PROTOCOL_V2"), PROTOCOL_V2 as i64);
    assert_eq!(c("QREXEC_PROTOCOL_V3"), PROTOCOL_V3 as i64);
    assert_eq!(c("QREXEC_PROTOCOL_V4"), PROTOCOL_V4 as i64);
    assert_eq!(c("QREXEC_PROTOCOL_VERSION"), DAEMON_VERSION as i64);
    assert_eq!(c("MAX_DATA_CHUNK_V2"), MAX_DATA_CHUNK_V2 as i64);
    assert_eq!(c("MAX_DATA_CHUNK_V3"), MAX_DATA_CHUNK_V3 as i64);
    assert_eq!(c("MAX_SERVICE_NAME_LEN"), MAX_SERVICE_NAME_LEN as i64);
    assert_eq!(c("VCHAN_BASE_PORT"), CONTROL_PORT as i64);
    assert_eq!(c("MAX_FDS"), DATA_PORT_COUNT as i64);
    assert_eq!(c("QREXEC_EXIT_PROBLEM"), EXIT_PROBLEM as i64);
    assert_eq!(c("QREXEC_EXIT_REQUEST_REFUSED"), EXIT_REFUSED as i64);
    assert_eq!(c("QREXEC_EXIT_SERVICE_NOT_FOUND"), EXIT_NOT_FOUND as i64);
    assert_eq!(c("sizeof(struct msg_header)"), wire::HEADER_LEN as i64);
    assert_eq!(c("sizeof(struct service_params)"), wire::IDENT_LEN as i64);
    assert_eq!(
        c("sizeof(struct trigger_service_params)"),
        wire::TRIGGER_V2_LEN as i64
    );
    assert_eq!(
        c("sizeof(struct trigger_service_params3)"),
        wire::TRIGGER3_LEN as i64
    );
    assert_eq!(
        c("sizeof(struct trigger_service_params4)"),
        wire::TRIGGER4_LEN as i64
    );
    for (name, t) in [
        ("MSG_EXEC_CMDLINE", MsgType::ExecCmdline),
        ("MSG_JUST_EXEC", MsgType::JustExec),
        ("MSG_SERVICE_CONNECT", MsgType::ServiceConnect),
        ("MSG_SERVICE_REFUSED", MsgType::ServiceRefused),
        ("MSG_TRIGGER_SERVICE", MsgType::TriggerService),
        ("MSG_CONNECTION_TERMINATED", MsgType::ConnectionTerminated),
        ("MSG_TRIGGER_SERVICE3", MsgType::TriggerService3),
        ("MSG_TRIGGER_SERVICE4", MsgType::TriggerService4),
        ("MSG_HELLO", MsgType::Hello),
        ("MSG_DATA_STDIN", MsgType::DataStdin),
        ("MSG_DATA_STDOUT", MsgType::DataStdout),
        ("MSG_DATA_STDERR", MsgType::DataStderr),
        ("MSG_DATA_EXIT_CODE", MsgType::DataExitCode),
    ] {
        assert_eq!(c(name), u32::from(t) as i64, "{name}");
        assert_eq!(MsgType::from(c(name) as u32), t, "{name}");
    }
}

#[test]
fn decoder_accepts_garbage_after_nul_in_fixed_fields() {
    // C peers do not always clear a char[N] after its NUL; the text ends at the NUL anyway.
    let file = test_vectors::load("qrexec.json");
    let mut bytes = file.get("MSG_SERVICE_REFUSED").bytes();
    bytes[8 + 20] = b'X';
    assert_eq!(
        Message::parse(&bytes),
        Ok(Message::ServiceRefused {
            request_id: b"SOCKET11"
        })
    );
}
