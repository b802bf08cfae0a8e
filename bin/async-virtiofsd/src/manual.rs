//! The man page and shell completions, generated from the parser's own definition
//! (`--print-man-page`, `--print-completions SHELL`) so they cannot drift from the options the
//! daemon accepts. `dist/build-deb.sh` ships their output in the Debian package.

use clap_complete::Shell;
use roff::{bold, roman, Roff};

/// One paragraph of a hand-written section.
enum Para {
    /// A tagged paragraph: the term in bold, then its text.
    Term(&'static str, &'static str),
    /// Running text.
    Text(&'static str),
    /// A command, set verbatim.
    Example(&'static str),
}
use Para::{Example, Term, Text};

/// Sections a reader of a daemon's man page expects beyond the option list.
const SECTIONS: &[(&str, &[Para])] = &[
    (
        "EXIT STATUS",
        &[
            Term(
                "0",
                "the frontend disconnected or SIGTERM/SIGINT stopped the daemon cleanly.",
            ),
            Term(
                "1",
                "the daemon could not start (shared directory, socket, sandbox) or failed while \
                 serving.",
            ),
            Term(
                "2",
                "the command line is unusable, or asks for a feature that is not implemented \
                 yet; one line on stderr says which.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            Term(
                "RUST_LOG",
                "a tracing filter (e.g. virtiofs_device=debug); overrides --log-level.",
            ),
            Term(
                "NOTIFY_SOCKET",
                "systemd's readiness socket; READY=1 and STATUS= are sent once the vhost-user \
                 socket listens, STOPPING=1 at shutdown.",
            ),
            Term(
                "LISTEN_FDS, LISTEN_PID",
                "systemd socket activation; the listening unix socket at fd 3 is served as if \
                 given with --fd 3.",
            ),
        ],
    ),
    (
        "FILES",
        &[
            Term(
                "/usr/share/qemu/vhost-user/50-async-virtiofsd.json",
                "the vhost-user discovery file libvirt reads to find the daemon.",
            ),
            Term(
                "/lib/systemd/system/async-virtiofsd@.service, async-virtiofsd@.socket",
                "one instance per VM or share; instance NAME reads /etc/async-virtiofsd/NAME.conf \
                 (SHARED_DIR=, OPTIONS=) and listens on /run/async-virtiofsd/NAME.sock.",
            ),
        ],
    ),
    (
        "EXAMPLES",
        &[
            Text("Serve /srv/share to one QEMU guest:"),
            Example(
                "async-virtiofsd --socket-path=/run/vfs.sock --shared-dir=/srv/share --cache=auto",
            ),
            Example("qemu-system-x86_64 ... -chardev socket,id=vfs,path=/run/vfs.sock \\"),
            Example("    -device vhost-user-fs-pci,chardev=vfs,tag=share \\"),
            Example(
                "    -object memory-backend-memfd,id=mem,size=4G,share=on -numa node,memdev=mem",
            ),
            Text("In the guest:"),
            Example("mount -t virtiofs share /mnt"),
            Text("Under libvirt, name the binary in the domain's filesystem element:"),
            Example("<binary path='/usr/libexec/async-virtiofsd'/>"),
            Text("As a systemd instance:"),
            Example("echo SHARED_DIR=/srv/share > /etc/async-virtiofsd/vm1.conf"),
            Example("systemctl start async-virtiofsd@vm1.socket"),
        ],
    ),
    (
        "SEE ALSO",
        &[Text(
            "qemu-system(1), virtiofsd(1), systemd.socket(5), systemd.service(5)",
        )],
    ),
];

/// The man page in roff, section 1.
pub fn man_page(cmd: clap::Command) -> String {
    let man = clap_mangen::Man::new(cmd).section("1");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    let mut extra = Roff::new();
    for (heading, paragraphs) in SECTIONS {
        extra.control("SH", [*heading]);
        for p in *paragraphs {
            match p {
                Term(term, text) => {
                    extra
                        .control("TP", [])
                        .text([bold(*term)])
                        .text([roman(*text)]);
                }
                Text(text) => {
                    extra.control("PP", []).text([roman(*text)]);
                }
                Example(cmd) => {
                    extra
                        .control("RS", ["4"])
                        .control("nf", [])
                        .text([roman(*cmd)])
                        .control("fi", [])
                        .control("RE", []);
                }
            }
        }
    }
    let _ = extra.to_writer(&mut out);
    let _ = man.render_version_section(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A completion script for `shell`.
pub fn completions(mut cmd: clap::Command, shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "async-virtiofsd", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}
