//! Arbitrary text as a qrexec policy file (and, after a `\n----\n` line, as every file it
//! includes), then evaluated against a small fixed system; checks round trips and invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qubes::policy::{
    parse_old_line, parse_rule, ArgPattern, CallTarget, Decision, Limits, Line, Policy,
    PolicySource, QubeType, Qube, Request, ServicePattern, SourceError, System,
};

/// Every included file holds `included`; every directory lists the same few names.
struct Echo<'a> {
    included: &'a str,
}

impl PolicySource for Echo<'_> {
    fn read_file(&self, _: &str) -> Result<String, SourceError> {
        Ok(self.included.to_string())
    }
    fn list_dir(&self, _: &str) -> Result<Vec<String>, SourceError> {
        Ok(["a.policy", "b.policy", ".h.policy", "svc+arg", "x.txt"].map(String::from).to_vec())
    }
}

fn system() -> System {
    let mut s = System::new();
    s.add(Qube::new("work", QubeType::AppVM).tag("work").default_dispvm("dvm"))
        .add(Qube::new("vault", QubeType::AppVM).tag("vault").halted())
        .add(Qube::new("dvm", QubeType::AppVM).dispvm_template().tag("t"))
        .add(Qube::new("disp1", QubeType::DispVM))
        .add(Qube::new("tpl", QubeType::TemplateVM).uuid("11111111-2222-3333-4444-555555555555"));
    s
}

const CALLS: &[(&str, &str, &str)] = &[
    ("svc", "work", "vault"),
    ("svc+x", "work", ""),
    ("svc+", "vault", "@dispvm"),
    ("qubes.Filecopy", "work", "@dispvm:dvm"),
    ("a", "dom0", "work"),
    ("svc", "disp1", "dom0"),
    ("svc", "tpl", "uuid:00000000-0000-0000-0000-000000000000"),
    ("x+y", "work", "ghost"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    let (main, included) = text.split_once("\n----\n").unwrap_or((text, ""));
    let limits = Limits { max_include_depth: 4, max_rules: 4000, max_files: 64, max_bytes: 1 << 20 };
    let echo = Echo { included };

    for line in main.lines() {
        if let Ok(Line::Rule(rule)) = qubes::policy::parse_line(line) {
            assert_eq!(parse_rule(&rule.to_string()).as_ref(), Ok(&rule), "round trip of {line:?}");
        }
        let svc = ServicePattern::Exact("svc".into());
        let _ = parse_old_line(&svc, &ArgPattern::Any, line);
    }

    match Policy::parse_with("/etc/qubes/policy.d/fuzz.policy", main, &echo, limits) {
        Ok(policy) => {
            assert!(policy.rules().len() <= limits.max_rules);
            let sys = system();
            for (call, source, target) in CALLS {
                match policy.evaluate(&sys, &Request::from_call(call, source, target)) {
                    Decision::Ask { targets, default_target, .. } => {
                        assert!(!targets.is_empty());
                        assert!(default_target.is_none_or(|t| targets.contains(&t)));
                        assert!(!targets.contains(&CallTarget::Qube((*source).into())));
                    }
                    Decision::Allow { target: CallTarget::Qube(name), .. } => {
                        assert!(sys.get(&name).is_some());
                    }
                    _ => {}
                }
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "multi-line error: {e}"),
    }
});
