//! Unit tests of the command line.

use super::*;

fn run(args: &[&str]) -> Result<Options, String> {
    let argv = std::iter::once("async-virtiofsd").chain(args.iter().copied());
    match parse(argv) {
        Ok(Parsed::Run(o)) => Ok(*o),
        Ok(Parsed::Exit(text)) => Err(format!("exit: {text}")),
        Err(e) => Err(e.0),
    }
}

#[test]
fn long_options() {
    let o = run(&[
        "--shared-dir=/srv",
        "--socket-path",
        "/tmp/s",
        "--thread-pool-size=0",
        "--cache=never",
        "--xattr",
        "--no-readdirplus",
    ])
    .unwrap();
    assert_eq!(o.share.shared_dir, PathBuf::from("/srv"));
    assert_eq!(o.listen, Listen::Path("/tmp/s".into()));
    assert_eq!(o.thread_pool_size, 0);
    assert_eq!(o.share.cache, CacheMode::Never);
    assert!(o.share.xattr && !o.share.readdirplus && !o.share.writeback);
}

#[test]
fn compat_forms_and_last_one_wins() {
    let o = run(&[
        "-o",
        "source=/a,cache=always,xattr",
        "--socket-path=/s",
        "--cache=never",
        "-o",
        "no_xattr,no_posix_lock",
        "--shared-dir=/b",
    ])
    .unwrap();
    assert_eq!(o.share.shared_dir, PathBuf::from("/b"));
    assert_eq!(o.share.cache, CacheMode::Never);
    assert!(!o.share.xattr);
    let o = run(&[
        "--shared-dir=/b",
        "--fd=3",
        "-o",
        "source=/a",
        "--cache=never",
        "-o",
        "cache=metadata",
    ])
    .unwrap();
    assert_eq!(o.share.shared_dir, PathBuf::from("/a"));
    assert_eq!(o.share.cache, CacheMode::Metadata);
    assert_eq!(o.listen, Listen::Fd(3));
}

#[test]
fn repeated_options_are_accepted() {
    // Kata prepends --thread-pool-size=1 to what the user configured.
    let o = run(&[
        "--thread-pool-size=1",
        "--shared-dir=/a",
        "--socket-path=/s",
        "--thread-pool-size=16",
    ])
    .unwrap();
    assert_eq!(o.thread_pool_size, 16);
}

#[test]
fn bad_values_name_the_option_and_allowed_values() {
    let e = run(&["--shared-dir=/a", "--socket-path=/s", "--cache=sometimes"]).unwrap_err();
    assert!(
        e.contains("--cache") && e.contains("never, auto, always, metadata"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    let e = run(&[
        "--shared-dir=/a",
        "--socket-path=/s",
        "--thread-pool-size=-1",
    ])
    .unwrap_err();
    assert!(e.contains("--thread-pool-size"), "{e}");
    let e = run(&[
        "--shared-dir=/a",
        "--socket-path=/s",
        "--thread-pool-size=99999",
    ])
    .unwrap_err();
    assert!(e.contains("0 to 1024"), "{e}");
    let e = run(&["-o", "source=/a,cache=bogus", "--socket-path=/s"]).unwrap_err();
    assert!(
        e.contains("cache") && e.contains("never, auto, always, metadata"),
        "{e}"
    );
    let e = run(&["-o", "source=/a,sandbox=jail", "--socket-path=/s"]).unwrap_err();
    assert!(
        e.contains("sandbox") && e.contains("namespace, chroot, none"),
        "{e}"
    );
    let e = run(&["-o", "source=/a,sloppy", "--socket-path=/s"]).unwrap_err();
    assert!(e.contains("sloppy") && e.contains("allowed"), "{e}");
    let e = run(&["--shared-dir=/a", "--socket-path=/s", "--log-level=loud"]).unwrap_err();
    assert!(e.contains("--log-level") && e.contains("trace"), "{e}");
    let e = run(&["--shared-dir=/a", "--socket-path=/s", "--bogus"]).unwrap_err();
    assert!(e.contains("--bogus"), "{e}");
}

#[test]
fn missing_share_or_socket_is_an_error() {
    assert!(run(&["--socket-path=/s"])
        .unwrap_err()
        .contains("--shared-dir"));
    assert!(run(&["--shared-dir=/a"])
        .unwrap_err()
        .contains("--socket-path"));
    assert!(run(&["--shared-dir=/a", "--socket-path=/s", "--fd=3"]).is_err());
}

#[test]
fn confinement_options() {
    let o = run(&["--shared-dir=/a", "--fd=3"]).unwrap();
    assert_eq!(o.sandbox, SandboxMode::Namespace);
    assert_eq!(o.seccomp, SeccompMode::Kill);
    assert_eq!(o.capabilities, CapabilityPolicy::default());
    assert_eq!(o.rlimit_nofile, None);
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--sandbox=none",
        "--seccomp",
        "log",
        "--modcaps",
        "-mknod:+sys_admin",
        "--rlimit-nofile=4096",
    ])
    .unwrap();
    assert_eq!(o.sandbox, SandboxMode::None);
    assert_eq!(o.seccomp, SeccompMode::Log);
    assert!(!o.capabilities.kept().contains(&caps::Capability::CAP_MKNOD));
    assert_eq!(o.rlimit_nofile, Some(4096));
    let e = run(&["--shared-dir=/a", "--fd=3", "--sandbox=jail"]).unwrap_err();
    assert!(
        e.contains("--sandbox") && e.contains("namespace, chroot, none"),
        "{e}"
    );
    let e = run(&["--shared-dir=/a", "--fd=3", "--seccomp=deny"]).unwrap_err();
    assert!(
        e.contains("--seccomp") && e.contains("none, kill, log, trap"),
        "{e}"
    );
    let e = run(&["--shared-dir=/a", "--fd=3", "--modcaps=+teleport"]).unwrap_err();
    assert!(e.contains("--modcaps") && e.contains("teleport"), "{e}");
    let e = run(&["--shared-dir=/a", "--fd=3", "--rlimit-nofile=lots"]).unwrap_err();
    assert!(e.contains("--rlimit-nofile"), "{e}");
}

#[test]
fn debug_flag_and_log_level() {
    assert_eq!(
        run(&["-o", "source=/a", "--fd=3", "-d"]).unwrap().log_level,
        LogLevel::Debug
    );
    assert_eq!(
        run(&["-o", "source=/a,log_level=warn", "--fd=3"])
            .unwrap()
            .log_level,
        LogLevel::Warn
    );
}

#[test]
fn options_not_built_yet_are_refused_in_one_line_naming_them() {
    let e = run(&["--shared-dir=/a", "--fd=3", "--migration-mode=find-paths"]).unwrap_err();
    assert_eq!(e, "--migration-mode is not implemented yet");
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--allow-mmap",
        "--preserve-noatime",
    ])
    .unwrap();
    assert!(o.share.allow_mmap && o.share.preserve_noatime);
    assert!(
        run(&["--shared-dir=/a", "--fd=3", "--readonly"])
            .unwrap()
            .share
            .readonly
    );
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--xattrmap",
        ":map::user.virtiofs.:",
    ])
    .unwrap();
    assert!(
        o.share.xattr && o.share.xattrmap.is_some(),
        "a map turns xattrs on"
    );
    let e = run(&["--shared-dir=/a", "--fd=3", "--xattrmap", ":prefix:all:a."]).unwrap_err();
    assert!(e.contains("--xattrmap") && e.contains("incomplete"), "{e}");
    // Checked before the share and socket: the refusal is the more useful message.
    let e = run(&["--migration-confirm-paths"]).unwrap_err();
    assert_eq!(e, "--migration-confirm-paths is not implemented yet");
    use virtiofs_passthrough::Negotiation as N;
    for (arg, want) in [
        ("--posix-acl", N::Always),
        ("--posix-acl=always", N::Always),
        ("--posix-acl=auto", N::Auto),
        ("--posix-acl=never", N::Never),
    ] {
        let o = run(&["--shared-dir=/a", "--fd=3", arg]).unwrap();
        assert_eq!(o.share.posix_acl, want, "{arg}");
        assert_eq!(o.share.xattr, want != N::Never, "{arg}: ACLs are xattrs");
    }
    for (args, want) in [
        (&["--security-label"][..], N::Always),
        (&["--security-label=always"], N::Always),
        (&["--security-label=auto"], N::Auto),
        (&["--security-label=never"], N::Never),
        (&["-o", "security_label"], N::Always),
        (&["-o", "no_security_label"], N::Never),
    ] {
        let mut argv = vec!["--shared-dir=/a", "--fd=3"];
        argv.extend_from_slice(args);
        let o = run(&argv).unwrap();
        assert_eq!(o.share.security_label, want, "{args:?}");
        assert_eq!(
            o.share.xattr,
            want != N::Never,
            "{args:?}: labels are xattrs"
        );
        assert_eq!(o.share.posix_acl, N::Never, "{args:?}");
    }
    assert!(run(&["--shared-dir=/a", "--fd=3", "--security-label", "auto"]).is_err());
    // The value syntax is the reference's: `--posix-acl always` is not `--posix-acl=always`.
    assert!(run(&["--shared-dir=/a", "--fd=3", "--posix-acl", "always"]).is_err());
    let e = run(&["--shared-dir=/a", "--fd=3", "--uid-map=0:1"]).unwrap_err();
    assert!(e.contains("--uid-map") && !e.contains('\n'), "{e}");
    let e = run(&["--shared-dir=/a", "--fd=3", "--tag="]).unwrap_err();
    assert!(e.contains("--tag") && e.contains("36"), "{e}");
    let e = run(&["--shared-dir=/a", "--fd=3", "--socket-group=kvm"]).unwrap_err();
    assert!(e.contains("--socket-group") && e.contains("--fd"), "{e}");
}

#[test]
fn last_one_wins_for_refused_features_too() {
    for (args, killpriv) in [
        (&["--killpriv-v2", "-o", "no_killpriv_v2"][..], false),
        (&["-o", "killpriv_v2", "--no-killpriv-v2"], false),
        (&["--no-killpriv-v2", "--killpriv-v2"], true),
    ] {
        let mut argv = vec!["--shared-dir=/a", "--fd=3"];
        argv.extend_from_slice(args);
        assert_eq!(run(&argv).unwrap().share.killpriv_v2, killpriv, "{args:?}");
    }
    for args in [
        &["--posix-acl", "--posix-acl=never"][..],
        &["-o", "security_label,no_security_label"],
        &["--posix-acl=never", "-o", "no_posix_acl"],
    ] {
        let mut argv = vec!["--shared-dir=/a", "--fd=3"];
        argv.extend_from_slice(args);
        assert!(run(&argv).is_ok(), "{args:?}");
    }
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--security-label=never",
        "--security-label=auto",
    ])
    .unwrap();
    assert_eq!(
        o.share.security_label,
        virtiofs_passthrough::Negotiation::Auto
    );
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "-o",
        "security_label",
        "--security-label=never",
    ])
    .unwrap();
    assert_eq!(
        o.share.security_label,
        virtiofs_passthrough::Negotiation::Never
    );
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--posix-acl=never",
        "-o",
        "posix_acl",
    ])
    .unwrap();
    assert_eq!(o.share.posix_acl, virtiofs_passthrough::Negotiation::Always);
}

#[test]
fn compat_forms_map_to_their_long_options() {
    let o = run(&[
        "-o",
        "source=/a,sandbox=none,modcaps=-mknod,loglevel=err,cache=none",
        "--socket=/s",
    ])
    .unwrap();
    assert_eq!(o.sandbox, SandboxMode::None);
    assert!(!o.capabilities.kept().contains(&caps::Capability::CAP_MKNOD));
    assert_eq!(o.log_level, LogLevel::Error);
    assert_eq!(o.share.cache, CacheMode::Never);
    assert_eq!(o.listen, Listen::Path("/s".into()));
    let o = run(&["-o", "source=/a,sandbox=none", "--fd=3", "--sandbox=chroot"]).unwrap();
    assert_eq!(o.sandbox, SandboxMode::Chroot);
    // xattrs are served in every sandbox (they need no /proc path).
    let o = run(&["-o", "source=/a,xattr,sandbox=chroot", "--fd=3"]).unwrap();
    assert!(o.share.xattr && o.sandbox == SandboxMode::Chroot);
}

#[test]
fn inode_file_handles_modes_and_the_capability_they_keep() {
    use virtiofs_passthrough::InodeFileHandles as Mode;
    let mode = |args: &[&str]| {
        let mut argv = vec!["--shared-dir=/a", "--fd=3"];
        argv.extend(args);
        let o = run(&argv).unwrap();
        let dac_read_search = o
            .capabilities
            .kept()
            .iter()
            .any(|c| c.to_string() == "CAP_DAC_READ_SEARCH");
        (o.share.inode_file_handles, dac_read_search)
    };
    assert_eq!(mode(&[]), (Mode::Never, false));
    assert_eq!(mode(&["--inode-file-handles=never"]), (Mode::Never, false));
    assert_eq!(mode(&["--inode-file-handles=prefer"]), (Mode::Prefer, true));
    assert_eq!(
        mode(&["--inode-file-handles=fallback"]),
        (Mode::Prefer, true),
        "fallback is prefer, as in the Rust virtiofsd"
    );
    assert_eq!(
        mode(&["--inode-file-handles=mandatory"]),
        (Mode::Mandatory, true)
    );
    // The last one given wins; --modcaps can still drop the capability.
    assert_eq!(
        mode(&[
            "--inode-file-handles=mandatory",
            "--inode-file-handles=never"
        ]),
        (Mode::Never, false)
    );
    assert_eq!(
        mode(&["--inode-file-handles=prefer", "--modcaps=-dac_read_search"]),
        (Mode::Prefer, false)
    );
    let e = run(&["--shared-dir=/a", "--fd=3", "--inode-file-handles=always"]).unwrap_err();
    assert!(e.contains("never, prefer, fallback, mandatory"), "{e}");
    let e = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--inode-file-handles",
        "prefer",
    ])
    .unwrap_err();
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn announce_submounts_last_one_wins() {
    let o = run(&["--shared-dir=/a", "--fd=3", "-o", "announce_submounts"]).unwrap();
    assert!(o.share.announce_submounts);
    // The last of two contradicting options wins.
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--announce-submounts",
        "--no-announce-submounts",
    ])
    .unwrap();
    assert!(!o.share.announce_submounts);
    assert!(
        run(&["--shared-dir=/a", "--fd=3", "--announce-submounts"])
            .unwrap()
            .share
            .announce_submounts
    );
}

#[test]
fn socket_activation_is_fd_3_and_excludes_socket_options() {
    let parse_act = |args: &[&str]| {
        let argv = std::iter::once("async-virtiofsd").chain(args.iter().copied());
        match parse_with(argv, Ok(Some(3))) {
            Ok(Parsed::Run(o)) => Ok(o.listen),
            Ok(Parsed::Exit(t)) => Err(t),
            Err(e) => Err(e.0),
        }
    };
    assert_eq!(parse_act(&["--shared-dir=/a"]), Ok(Listen::Fd(3)));
    for extra in ["--socket-path=/s", "--fd=4"] {
        let e = parse_act(&["--shared-dir=/a", extra]).unwrap_err();
        assert!(e.contains("LISTEN_FDS") && !e.contains('\n'), "{e}");
    }
}

#[test]
fn man_page_and_completions_list_every_visible_option_and_need_nothing_else() {
    let page = run(&["--print-man-page"]).unwrap_err();
    let bash = run(&["--print-completions", "bash"]).unwrap_err();
    let mut visible = 0;
    for arg in Args::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() {
            assert!(
                !page.contains(&long.replace('-', r"\-")),
                "hidden --{long} in the man page"
            );
            continue;
        }
        visible += 1;
        let roff = format!(r"\-\-{}", long.replace('-', r"\-"));
        assert!(page.contains(&roff), "--{long} missing from the man page");
        assert!(
            bash.contains(&format!("--{long}")),
            "--{long} missing from bash completion"
        );
    }
    assert!(visible > 30, "only {visible} options seen");
    assert!(page.starts_with("exit: .ie"), "not roff: {}", &page[..40]);
    for section in [
        "NAME",
        "OPTIONS",
        "\"EXIT STATUS\"",
        "ENVIRONMENT",
        "EXAMPLES",
    ] {
        assert!(
            page.contains(&format!(".SH {section}\n")),
            "no {section} section"
        );
    }
    let e = run(&["--print-completions", "tcsh"]).unwrap_err();
    assert!(e.contains("allowed: bash"), "{e}");
}

#[test]
fn queue_affinity_is_parsed_and_checked_against_queues_and_cpus() {
    let base = ["--shared-dir=/srv", "--socket-path=/s"];
    let with = |v: &str| {
        let mut a = base.to_vec();
        a.push("--queue-affinity");
        a.push(v);
        run(&a)
    };
    assert_eq!(run(&base).unwrap().queue_affinity, None);
    assert_eq!(
        with("auto").unwrap().queue_affinity,
        Some(QueueAffinity::Auto)
    );
    let cpu = CpuSet::of_this_thread().unwrap().cpus()[0];
    let o = with(&format!("1:{cpu},64:{cpu}")).unwrap();
    assert_eq!(
        o.queue_affinity,
        Some(format!("1:{cpu},64:{cpu}").parse().unwrap())
    );
    for (bad, says) in [
        ("0:0", "hiprio"),
        ("65:0", "queue 65 does not exist"),
        ("1:1023", "CPU 1023"),
        ("1:x", "not a CPU number"),
        ("0-1", "names no queue"),
    ] {
        let e = with(bad).unwrap_err();
        assert!(
            e.contains("queue-affinity") && e.contains(says),
            "{bad}: {e}"
        );
    }
}

#[test]
fn quota_options_take_counts_and_binary_sizes() {
    let o = run(&["--shared-dir=/a", "--fd=3"]).unwrap();
    assert_eq!((o.share.max_inodes, o.share.max_bytes), (None, None));
    for (arg, want) in [
        ("--max-bytes=1", 1),
        ("--max-bytes=4096", 4096),
        ("--max-bytes=10K", 10 << 10),
        ("--max-bytes=10k", 10 << 10),
        ("--max-bytes=3M", 3 << 20),
        ("--max-bytes=2MiB", 2 << 20),
        ("--max-bytes=5G", 5 << 30),
        ("--max-bytes=2T", 2 << 40),
    ] {
        let o = run(&["--shared-dir=/a", "--fd=3", arg]).unwrap();
        assert_eq!(o.share.max_bytes, Some(want), "{arg}");
    }
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--max-inodes",
        "1000",
        "--max-inodes=7",
    ])
    .unwrap();
    assert_eq!(o.share.max_inodes, Some(7), "the last one wins");
    for (arg, says) in [
        ("--max-bytes=0", "at least 1"),
        ("--max-bytes=0G", "at least 1"),
        ("--max-bytes=10X", "K, M, G or T"),
        ("--max-bytes=G", "K, M, G or T"),
        ("--max-bytes=-5", "K, M, G or T"),
        ("--max-bytes=1.5G", "K, M, G or T"),
        ("--max-bytes=99999999999T", "more bytes than there can be"),
        ("--max-inodes=0", "at least 1"),
        ("--max-inodes=lots", "whole number"),
        ("--max-inodes=-1", "whole number"),
    ] {
        let e = run(&["--shared-dir=/a", "--fd=3", arg]).unwrap_err();
        let name = arg.split('=').next().unwrap();
        assert!(e.contains(name) && e.contains(says), "{arg}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn poll_us_is_20_by_default_and_bounded() {
    let base = ["--shared-dir=/srv", "--socket-path=/s"];
    assert_eq!(run(&base).unwrap().poll_max, Duration::from_micros(20));
    let mut a = base.to_vec();
    a.push("--poll-us=0");
    assert_eq!(run(&a).unwrap().poll_max, Duration::ZERO, "0 turns it off");
    let mut a = base.to_vec();
    a.push("--poll-us=50");
    assert_eq!(run(&a).unwrap().poll_max, Duration::from_micros(50));
    for bad in ["--poll-us=1001", "--poll-us=-1", "--poll-us=x"] {
        let mut a = base.to_vec();
        a.push(bad);
        let e = run(&a).unwrap_err();
        assert!(e.contains("--poll-us"), "{bad}: {e}");
    }
}

#[test]
fn scheduling_inherits_by_default_and_takes_batch() {
    let with = |extra: &[&str]| run(&[&["--shared-dir=/srv", "--socket-path=/s"], extra].concat());
    assert_eq!(with(&[]).unwrap().scheduling, Scheduling::Inherit);
    let batch = with(&["--scheduling=batch"]).unwrap();
    assert_eq!(batch.scheduling, Scheduling::Batch);
    let e = with(&["--scheduling=fifo"]).unwrap_err();
    assert!(e.contains("--scheduling") && !e.contains('\n'), "{e}");
}

#[test]
fn id_translation_rules_accumulate_and_bad_ones_are_one_line() {
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--translate-uid",
        "squash-guest:0:1001:4294967295",
        "--translate-uid=host:1001:1000:1",
        "--translate-gid",
        "MAP/0/100/1",
    ])
    .unwrap();
    let (uid, gid) = (&o.share.idmaps.uid, &o.share.idmaps.gid);
    assert_eq!(uid.rules().len(), 2);
    assert_eq!((uid.to_host(0), uid.to_host(55)), (Ok(1001), Ok(1001)));
    assert_eq!(uid.to_guest(1001), 1000);
    assert_eq!((gid.to_host(0), gid.to_guest(100)), (Ok(100), 0));
    assert!(run(&["--shared-dir=/a", "--fd=3"])
        .unwrap()
        .share
        .idmaps
        .is_empty());
    for (args, want) in [
        (&["--translate-uid=sideways:0:1:2"][..], "--translate-uid"),
        (&["--translate-gid", "map:0:1"], "takes 3 numbers"),
        (&["--translate-uid=forbid-guest:0:x"], "'x' is not an id"),
        (&["--translate-uid=guest:0:4294967295:1"], "4294967294"),
        (
            &[
                "--translate-uid=map:0:1000:10",
                "--translate-uid=guest:5:0:1",
            ],
            "--translate-uid: guest:5:0:1 overlaps map:0:1000:10",
        ),
        (
            &[
                "--translate-gid=map:0:1000:10",
                "--translate-gid=host:1009:0:1",
            ],
            "--translate-gid: host:1009:0:1 overlaps map:0:1000:10 (host ids",
        ),
    ] {
        let mut argv = vec!["--shared-dir=/a", "--fd=3"];
        argv.extend_from_slice(args);
        let e = run(&argv).unwrap_err();
        assert!(e.contains(want) && !e.contains('\n'), "{args:?}: {e}");
    }
    // With ACLs too: the ids inside ACL values are translated (unlike the Rust virtiofsd,
    // which refuses the pair).
    for acl in ["--posix-acl=never", "--posix-acl=auto", "--posix-acl"] {
        let o = run(&[
            "--shared-dir=/a",
            "--fd=3",
            acl,
            "--translate-uid=map:0:1:1",
        ])
        .unwrap();
        assert!(!o.share.idmaps.is_empty(), "{acl}");
    }
}

#[test]
fn namespace_id_maps_parse_and_need_the_namespace_sandbox() {
    let o = run(&[
        "--shared-dir=/a",
        "--fd=3",
        "--uid-map=:0:1000:1:",
        "--uid-map",
        "/1/100000/65536/",
        "--gid-map=:0:1000:1:",
    ])
    .unwrap();
    assert_eq!(o.ns_idmaps.uid.len(), 2);
    assert_eq!(o.ns_idmaps.uid[1].outside, 100000);
    assert_eq!(o.ns_idmaps.gid[0].count, 1);
    for (args, want) in [
        (&["--uid-map=:0:1000:"][..], "--uid-map"),
        (&["--gid-map=:0:1000:0:"], "at least 1"),
        (
            &["--uid-map=:0:1000:1:", "--sandbox=none"],
            "need --sandbox namespace",
        ),
        (
            &["--gid-map=:0:1000:1:", "-o", "sandbox=chroot"],
            "need --sandbox namespace",
        ),
    ] {
        let mut argv = vec!["--shared-dir=/a", "--fd=3"];
        argv.extend_from_slice(args);
        let e = run(&argv).unwrap_err();
        assert!(e.contains(want) && !e.contains('\n'), "{args:?}: {e}");
    }
}

#[test]
fn queue_threads_default_to_half_the_cpus_and_give_way_to_affinity() {
    let base = ["--shared-dir=/srv", "--socket-path=/s"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run(&a)
    };
    let half = CpuSet::of_this_thread().unwrap().cpus().len().div_ceil(2);
    assert_eq!(run(&base).unwrap().queue_threads, half);
    assert_eq!(with(&["--queue-threads=auto"]).unwrap().queue_threads, half);
    assert_eq!(with(&["--queue-threads", "3"]).unwrap().queue_threads, 3);
    // Pinned queues each keep a thread of their own (0: one per queue).
    let pinned = with(&["--queue-affinity=auto"]).unwrap();
    assert_eq!(pinned.queue_threads, 0);
    let e = with(&["--queue-affinity=auto", "--queue-threads=2"]).unwrap_err();
    assert!(
        e.contains("--queue-threads") && e.contains("--queue-affinity"),
        "{e}"
    );
    for bad in ["0", "65", "-1", "many"] {
        let e = with(&[&format!("--queue-threads={bad}")]).unwrap_err();
        assert!(
            e.contains("--queue-threads") && e.contains("auto"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn auto_queue_threads_leave_the_guest_half_the_cpus() {
    for (cpus, threads) in [(1, 1), (2, 1), (3, 2), (4, 2), (64, 32)] {
        assert_eq!(auto_queue_threads(Some(cpus)), threads, "{cpus} CPUs");
    }
    assert_eq!(auto_queue_threads(None), 0, "unknown: a thread per queue");
}
