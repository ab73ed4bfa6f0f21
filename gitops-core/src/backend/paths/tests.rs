use super::*;

use std::os::unix::fs::symlink;
use std::sync::mpsc;
use std::time::Duration;

/// A checkout in a temporary directory, built by `make` (paths relative to its root).
fn tree(make: impl FnOnce(&Path)) -> (tempfile::TempDir, Checkout) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("checkout");
    std::fs::create_dir(&root).unwrap();
    make(&root);
    let checkout = Checkout::open(&root).unwrap();
    (tmp, checkout)
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn link(root: &Path, rel: &str, target: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    symlink(target, path).unwrap();
}

fn fifo(root: &Path, rel: &str) {
    nix::unistd::mkfifo(&root.join(rel), Mode::from_bits_truncate(0o644)).unwrap();
}

/// The message of an error.
fn message<T: std::fmt::Debug>(r: Result<T, BackendError>) -> String {
    match r {
        Err(BackendError::InvalidParameters(m)) => m,
        other => panic!("expected invalid parameters, got {other:?}"),
    }
}

/// Runs `f` on another thread and fails the test unless it returns within a second: what it
/// does must never block (on a FIFO) or read forever (`/dev/zero`).
fn quickly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(1))
        .expect("it must return within a second")
}

fn resolved(path: &str, kind: Kind) -> Resolved {
    Resolved {
        path: path.into(),
        kind,
    }
}

#[test]
fn regular_files_and_nested_dirs_resolve_and_read() {
    let (_tmp, c) = tree(|r| write(r, "a/b/c.txt", "hello"));
    assert_eq!(
        c.resolve("files", "a/b/c.txt").unwrap(),
        resolved("a/b/c.txt", Kind::File)
    );
    assert_eq!(
        c.resolve("files", "./a/b/").unwrap(),
        resolved("a/b", Kind::Dir)
    );
    assert_eq!(c.resolve("files", "").unwrap(), resolved("", Kind::Dir));
    assert_eq!(c.resolve("files", ".").unwrap(), resolved("", Kind::Dir));
    assert_eq!(c.read("files", "a/b/c.txt").unwrap(), b"hello");
    assert_eq!(c.read_to_string("files", "a/b/c.txt").unwrap(), "hello");
    assert_eq!(
        message(c.read("files", "a/b")),
        "`with.files`: \"a/b\" is a directory, not a file"
    );
}

#[test]
fn a_dotdot_that_stays_inside_is_followed() {
    let (_tmp, c) = tree(|r| {
        write(r, "a/x", "");
        write(r, "b/y", "why");
    });
    assert_eq!(
        c.resolve("files", "a/../b/y").unwrap(),
        resolved("b/y", Kind::File)
    );
    assert_eq!(c.resolve("files", "a/..").unwrap(), resolved("", Kind::Dir));
    assert_eq!(c.read("files", "a/../b/y").unwrap(), b"why");
}

#[test]
fn a_dotdot_leaving_and_an_absolute_path_are_refused() {
    let (_tmp, c) = tree(|r| write(r, "a/x", ""));
    assert_eq!(
        message(c.resolve("files", "../secret")),
        "`with.files`: \"../secret\" is not a path inside the checkout"
    );
    assert_eq!(
        message(c.resolve("files", "a/../../secret")),
        "`with.files`: \"a/../../secret\" is not a path inside the checkout"
    );
    assert_eq!(
        message(c.read("files", "/etc/passwd")),
        "`with.files`: \"/etc/passwd\" is not a path inside the checkout"
    );
}

#[test]
fn a_symlink_to_etc_is_refused_wherever_it_is_on_the_way() {
    let (_tmp, c) = tree(|r| link(r, "site", "/etc"));
    assert_eq!(
        message(c.resolve("files", "site")),
        "`with.files`: \"site\" is a symbolic link to /etc, which leads out of the checkout"
    );
    assert_eq!(
        message(c.read("files", "site/passwd")),
        "`with.files`: \"site/passwd\": \"site\" is a symbolic link to /etc, which leads out of the checkout"
    );
    assert_eq!(
        message(c.walk("files", "", |_| true)),
        "`with.files`: \"site\" is a symbolic link to /etc, which leads out of the checkout"
    );
}

#[test]
fn a_relative_symlink_climbing_out_is_refused() {
    let (_tmp, c) = tree(|r| {
        link(r, "a/b/up", "../../..");
        link(r, "a/ok", "b");
    });
    assert_eq!(
        message(c.resolve("dir", "a/b/up")),
        "`with.dir`: \"a/b/up\" is a symbolic link to ../../.., which leads out of the checkout"
    );
    // Through another link: `a/ok/up` is `a/b/up`.
    assert_eq!(
        message(c.resolve("dir", "a/ok/up/etc")),
        "`with.dir`: \"a/ok/up/etc\": \"a/b/up\" is a symbolic link to ../../.., which leads out of the checkout"
    );
}

#[test]
fn a_symlink_chain_inside_is_followed() {
    let (_tmp, c) = tree(|r| {
        write(r, "real/dir/file.txt", "at the end");
        link(r, "one", "two/../three");
        link(r, "two", "real");
        link(r, "three", "real/dir");
    });
    // `two/..` is the parent of `real`, the root: the kernel's reading of it.
    assert_eq!(
        c.resolve("files", "one").unwrap(),
        resolved("real/dir", Kind::Dir)
    );
    assert_eq!(c.read("files", "one/file.txt").unwrap(), b"at the end");
}

#[test]
fn a_symlink_loop_is_refused() {
    let (_tmp, c) = tree(|r| {
        link(r, "a", "b");
        link(r, "b", "a");
        link(r, "self", "self/x");
    });
    assert_eq!(
        message(c.resolve("files", "a")),
        "`with.files`: \"a\" goes through more than 40 symbolic links (a loop?)"
    );
    assert_eq!(
        message(c.resolve("files", "self")),
        "`with.files`: \"self\" goes through more than 40 symbolic links (a loop?)"
    );
}

#[test]
fn max_links_is_allowed_one_more_is_not() {
    let chain = |n: usize| {
        tree(move |r| {
            write(r, "end", "x");
            for i in 0..n {
                let target = if i + 1 == n {
                    "end".to_owned()
                } else {
                    format!("l{}", i + 1)
                };
                link(r, &format!("l{i}"), &target);
            }
        })
    };
    let (_tmp, c) = chain(MAX_LINKS);
    assert_eq!(
        c.resolve("files", "l0").unwrap(),
        resolved("end", Kind::File)
    );
    let (_tmp, c) = chain(MAX_LINKS + 1);
    assert!(message(c.resolve("files", "l0")).contains("more than 40 symbolic links"));
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let (tmp, c) = tree(|r| {
        std::fs::create_dir(r.join("k8s")).unwrap();
        fifo(r, "k8s/x.yaml");
        link(r, "pipe", "k8s/x.yaml");
    });
    let c = std::sync::Arc::new(c);
    let c2 = c.clone();
    let (read, resolve, via_link, walk) = quickly(move || {
        (
            message(c2.read("manifests", "k8s/x.yaml")),
            message(c2.resolve("manifests", "k8s/x.yaml")),
            message(c2.read("manifests", "pipe")),
            message(c2.walk("manifests", "k8s", |_| true)),
        )
    });
    assert_eq!(
        read,
        "`with.manifests`: \"k8s/x.yaml\" is a FIFO, not a file"
    );
    assert_eq!(
        resolve,
        "`with.manifests`: \"k8s/x.yaml\" is a FIFO, not a file or directory"
    );
    assert_eq!(
        via_link,
        "`with.manifests`: \"pipe\" leads to \"k8s/x.yaml\", which is a FIFO, not a file"
    );
    assert_eq!(
        walk,
        "`with.manifests`: \"k8s/x.yaml\" is a FIFO, not a file or directory"
    );
    let to = tmp.path().join("copy");
    let copy = quickly(move || message(c.copy_tree("files", "", &to, |_| true)));
    // The root's entries come first: the link to the FIFO is met before the FIFO.
    assert_eq!(
        copy,
        "`with.files`: \"pipe\" leads to \"k8s/x.yaml\", which is a FIFO, not a file or directory"
    );
}

#[test]
fn a_symlink_to_dev_zero_is_refused_without_reading() {
    let (_tmp, c) = tree(|r| link(r, "dev", "/dev/zero"));
    let got = quickly(move || message(c.read("files", "dev")));
    assert_eq!(
        got,
        "`with.files`: \"dev\" is a symbolic link to /dev/zero, which leads out of the checkout"
    );
}

#[test]
fn a_socket_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("checkout");
    std::fs::create_dir_all(root.join("run")).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(root.join("run/app.sock")).unwrap();
    let c = Checkout::open(&root).unwrap();
    assert_eq!(
        message(c.read("files", "run/app.sock")),
        "`with.files`: \"run/app.sock\" is a socket, not a file"
    );
    assert_eq!(
        message(c.walk("files", "run", |_| true)),
        "`with.files`: \"run/app.sock\" is a socket, not a file or directory"
    );
    // What `keep` drops is never looked at.
    assert_eq!(
        c.walk("files", "run", |p| p != Path::new("app.sock"))
            .unwrap(),
        vec![]
    );
}

#[test]
fn missing_paths_and_files_on_the_way() {
    let (_tmp, c) = tree(|r| {
        write(r, "file", "");
        link(r, "dangling", "nowhere/x");
    });
    assert_eq!(c.find("files", "missing").unwrap(), None);
    assert_eq!(c.find("files", "nodir/missing").unwrap(), None);
    assert_eq!(
        message(c.resolve("files", "missing")),
        "`with.files`: \"missing\" is not in the checkout"
    );
    assert_eq!(
        message(c.find("files", "dangling")),
        "`with.files`: \"dangling\" is a symbolic link to nowhere/x, which leads to nothing in the checkout"
    );
    assert_eq!(
        message(c.find("files", "file/x")),
        "`with.files`: \"file/x\": \"file\" is a file, not a directory"
    );
}

#[test]
fn walk_keeps_links_inside_the_walked_directory() {
    let (_tmp, c) = tree(|r| {
        write(r, "site/index.html", "hi");
        write(r, "site/css/a.css", "");
        link(r, "site/home.html", "index.html");
        link(r, "site/style", "css");
        write(r, "site/.git/HEAD", "");
        write(r, "shared.txt", "");
    });
    let entries = c.walk("files", "site", |p| p != Path::new(".git")).unwrap();
    let e = |p: &str, kind: EntryKind| Entry {
        path: p.into(),
        kind,
    };
    let sym = |t: &str, leads_to| EntryKind::Symlink {
        target: t.into(),
        leads_to,
    };
    assert_eq!(
        entries,
        vec![
            e("css", EntryKind::Dir),
            e("home.html", sym("index.html", Kind::File)),
            e("index.html", EntryKind::File),
            e("style", sym("css", Kind::Dir)),
            e("css/a.css", EntryKind::File),
        ]
    );
}

#[test]
fn walk_refuses_links_leaving_the_walked_directory() {
    let (_tmp, c) = tree(|r| {
        write(r, "site/index.html", "");
        write(r, "shared.txt", "");
        link(r, "site/shared", "../shared.txt");
        link(r, "named", "site");
    });
    // Inside the checkout, but a copy of `site` would hold a link leading out of the copy.
    assert_eq!(
        message(c.walk("files", "site", |_| true)),
        "`with.files`: \"site/shared\" is a symbolic link to ../shared.txt, which leads out of \"site\""
    );
    assert_eq!(
        message(c.walk("files", "named", |_| true)),
        "`with.files`: \"site/shared\" is a symbolic link to ../shared.txt, which leads out of \"named\""
    );
    // From the root, it stays inside.
    assert!(c.walk("files", "", |_| true).is_ok());
}

#[test]
fn copy_tree_copies_files_modes_and_links_inside() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, c) = tree(|r| {
        write(r, "site/index.html", "hi");
        write(r, "site/run.sh", "#!/bin/sh");
        std::fs::set_permissions(
            r.join("site/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        link(r, "site/home.html", "index.html");
        link(r, "alias", "site");
        write(r, "one.txt", "1");
    });
    let to = tmp.path().join("release");
    c.copy_tree("files", "alias", &to.join("alias"), |_| true)
        .unwrap();
    c.copy_tree("files", "one.txt", &to.join("sub/one.txt"), |_| true)
        .unwrap();
    let alias = to.join("alias");
    assert!(
        alias.symlink_metadata().unwrap().is_dir(),
        "a named link is copied as what it leads to"
    );
    assert_eq!(
        std::fs::read_to_string(alias.join("index.html")).unwrap(),
        "hi"
    );
    assert_eq!(
        std::fs::read_link(alias.join("home.html")).unwrap(),
        Path::new("index.html")
    );
    let mode = std::fs::metadata(alias.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_to_string(to.join("sub/one.txt")).unwrap(),
        "1"
    );
}

#[test]
fn copy_tree_never_writes_through_a_link_at_the_destination() {
    let (tmp, c) = tree(|r| write(r, "one.txt", "1"));
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let to = tmp.path().join("out");
    symlink(&victim, &to).unwrap();
    assert!(c.copy_tree("files", "one.txt", &to, |_| true).is_err());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

#[test]
fn a_file_swapped_for_a_fifo_after_the_check_is_caught() {
    let (tmp, c) = tree(|r| write(r, "config.yaml", "a: 1"));
    let found = resolve_in(c.fd.as_fd(), Path::new("config.yaml"))
        .ok()
        .unwrap();
    let path = tmp.path().join("checkout/config.yaml");
    std::fs::remove_file(&path).unwrap();
    fifo(&tmp.path().join("checkout"), "config.yaml");
    let refused = quickly(move || {
        found.open_file().err().map(|r| {
            r.error(
                "x",
                Path::new("config.yaml"),
                Path::new(""),
                "the checkout",
                Want::File,
            )
        })
    });
    assert_eq!(
        message::<()>(Err(refused.unwrap())),
        "`with.x`: \"config.yaml\" changed while it was being opened"
    );
}

#[test]
fn list_follows_links_inside_the_checkout_and_refuses_the_rest() {
    let (_tmp, c) = tree(|r| {
        write(r, "infra/main.tf", "");
        write(r, "common/providers.tf", "");
        link(r, "infra/providers.tf", "../common/providers.tf");
        std::fs::create_dir(r.join("infra/modules")).unwrap();
    });
    assert_eq!(
        c.list("dir", "infra").unwrap(),
        vec![
            (
                "infra/main.tf".into(),
                resolved("infra/main.tf", Kind::File)
            ),
            ("infra/modules".into(), resolved("infra/modules", Kind::Dir)),
            (
                "infra/providers.tf".into(),
                resolved("common/providers.tf", Kind::File)
            ),
        ]
    );
    let (_tmp, c) = tree(|r| {
        write(r, "infra/main.tf", "");
        link(r, "infra/passwd.tf", "/etc/passwd");
    });
    assert_eq!(
        message(c.list("dir", "infra")),
        "`with.dir`: \"infra/passwd.tf\" is a symbolic link to /etc/passwd, which leads out of the checkout"
    );
    let (_tmp, c) = tree(|r| {
        write(r, "infra/main.tf", "");
        fifo(r, "infra/x.tf");
    });
    let got = quickly(move || message(c.list("dir", "infra")));
    assert_eq!(
        got,
        "`with.dir`: \"infra/x.tf\" is a FIFO, not a file or directory"
    );
}
