//! `TemplateStore`: latest and exact versions, listing, reload, names, sharing across threads.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::Path;
use std::sync::Arc;

use prompt_templates::{TemplateError, TemplateInfo, TemplateStore, VersionReq};

fn write(dir: &Path, agent: &str, task: &str, version: u32, body: &str) {
    std::fs::create_dir_all(dir.join(agent)).unwrap();
    let yaml = format!(
        "version: {version}\nagent: {agent}\ntask: {task}\nsystem_prompt: \"System v{version}\"\nuser_prompt_template: \"{body}\"\n"
    );
    std::fs::write(
        dir.join(agent).join(format!("{task}_v{version}.yaml")),
        yaml,
    )
    .unwrap();
}

fn user(store: &TemplateStore, agent: &str, task: &str, version: VersionReq) -> String {
    store
        .load(agent, task, version)
        .unwrap()
        .render(&Default::default())
        .unwrap()
        .user
}

fn fixture() -> (tempfile::TempDir, TemplateStore) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "writer", "chapter", 1, "one");
    write(dir.path(), "writer", "chapter", 2, "two");
    write(dir.path(), "writer", "chapter", 10, "ten");
    write(dir.path(), "writer", "scene", 1, "scene one");
    write(dir.path(), "editor", "edit", 3, "edit three");
    std::fs::write(dir.path().join("writer/notes.txt"), "not a template").unwrap();
    std::fs::write(dir.path().join("writer/chapter_v01.yaml"), "not canonical").unwrap();
    let store = TemplateStore::open(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn latest_is_the_highest_version_number() {
    let (_dir, store) = fixture();
    let t = store.load("writer", "chapter", VersionReq::Latest).unwrap();
    assert_eq!(t.version(), 10);
    assert_eq!(user(&store, "writer", "chapter", VersionReq::Latest), "ten");
    assert_eq!(t.content_hash().len(), 64);
    assert!(
        t.content_hash()
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(t.path().ends_with("writer/chapter_v10.yaml"));
}

#[test]
fn exact_versions() {
    let (_dir, store) = fixture();
    for (n, text) in [(1, "one"), (2, "two"), (10, "ten")] {
        assert_eq!(
            user(&store, "writer", "chapter", VersionReq::Exact(n)),
            text
        );
    }
    let err = store
        .load("writer", "chapter", VersionReq::Exact(5))
        .unwrap_err();
    assert!(
        matches!(err, TemplateError::NotFound { ref available, .. } if available == &[1, 2, 10]),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("template writer/chapter (v5) not found in"),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("(available: v1, v2, v10)"),
        "{err}"
    );
    let err = store
        .load("writer", "nothing", VersionReq::Latest)
        .unwrap_err();
    assert!(matches!(err, TemplateError::NotFound { .. }), "{err:?}");
    let err = store
        .load("nobody", "chapter", VersionReq::Latest)
        .unwrap_err();
    assert!(matches!(err, TemplateError::NotFound { .. }), "{err:?}");
}

#[test]
fn the_content_hash_is_the_sha256_of_the_file() {
    let (dir, store) = fixture();
    let t = store.load("writer", "scene", VersionReq::Exact(1)).unwrap();
    let bytes = std::fs::read(dir.path().join("writer/scene_v1.yaml")).unwrap();
    // Hash computed independently of the crate: a different template gives a different hash.
    let other = store
        .load("writer", "chapter", VersionReq::Exact(1))
        .unwrap();
    assert_ne!(t.content_hash(), other.content_hash());
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("writer")).unwrap();
    std::fs::write(copy.path().join("writer/scene_v1.yaml"), &bytes).unwrap();
    let again = TemplateStore::open(copy.path())
        .unwrap()
        .load("writer", "scene", VersionReq::Latest)
        .unwrap();
    assert_eq!(again.content_hash(), t.content_hash());
}

#[test]
fn version_req_parses_and_displays() {
    for (text, req) in [
        ("latest", VersionReq::Latest),
        ("LATEST", VersionReq::Latest),
        ("3", VersionReq::Exact(3)),
        ("v12", VersionReq::Exact(12)),
        ("V2", VersionReq::Exact(2)),
        ("production", VersionReq::Label("production".into())),
        ("newest", VersionReq::Label("newest".into())),
        ("v1x", VersionReq::Label("v1x".into())),
    ] {
        assert_eq!(text.parse::<VersionReq>().unwrap(), req, "{text}");
    }
    for bad in ["", "0", "v0", "-1", "1.5", "a b", "1x", "_x"] {
        let err = bad.parse::<VersionReq>().unwrap_err();
        assert!(
            matches!(err, TemplateError::InvalidVersionReq(_)),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(VersionReq::Latest.to_string(), "latest");
    assert_eq!(VersionReq::Exact(4).to_string(), "v4");
    assert_eq!(VersionReq::Label("staging".into()).to_string(), "staging");
    assert_eq!(VersionReq::default(), VersionReq::Latest);
}

#[test]
fn list_all_and_one_agent() {
    let (dir, store) = fixture();
    let info = |agent: &str, task: &str, version: u32| TemplateInfo {
        agent: agent.into(),
        task: task.into(),
        version,
        path: dir
            .path()
            .join(agent)
            .join(format!("{task}_v{version}.yaml")),
    };
    assert_eq!(
        store.list(None).unwrap(),
        vec![
            info("editor", "edit", 3),
            info("writer", "chapter", 1),
            info("writer", "chapter", 2),
            info("writer", "chapter", 10),
            info("writer", "scene", 1),
        ]
    );
    assert_eq!(
        store.list(Some("editor")).unwrap(),
        vec![info("editor", "edit", 3)]
    );
    assert_eq!(store.list(Some("nobody")).unwrap(), vec![]);
    assert!(matches!(
        store.list(Some("../x")).unwrap_err(),
        TemplateError::InvalidName { .. }
    ));
}

#[test]
fn load_serves_one_arc_from_memory_and_reload_reads_the_disk() {
    let (dir, store) = fixture();
    let first = store.load("writer", "scene", VersionReq::Latest).unwrap();
    let exact = store.load("writer", "scene", VersionReq::Exact(1)).unwrap();
    assert!(Arc::ptr_eq(&first, &exact));
    write(dir.path(), "writer", "scene", 1, "scene one, revised");
    write(dir.path(), "writer", "scene", 2, "scene two");
    // Still served from memory: neither the edit nor the new version is seen.
    let cached = store.load("writer", "scene", VersionReq::Latest).unwrap();
    assert!(Arc::ptr_eq(&first, &cached));
    assert_eq!(
        user(&store, "writer", "scene", VersionReq::Exact(1)),
        "scene one"
    );
    // An exact version not loaded before is read from disk.
    assert_eq!(
        user(&store, "writer", "scene", VersionReq::Exact(2)),
        "scene two"
    );
    // reload(Exact(1)) sees the edit; latest moves on with reload(Latest).
    let reloaded = store
        .reload("writer", "scene", VersionReq::Exact(1))
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &reloaded));
    assert_ne!(first.content_hash(), reloaded.content_hash());
    assert_eq!(
        user(&store, "writer", "scene", VersionReq::Latest),
        "scene one, revised"
    );
    let latest = store.reload("writer", "scene", VersionReq::Latest).unwrap();
    assert_eq!(latest.version(), 2);
    assert!(Arc::ptr_eq(
        &latest,
        &store.load("writer", "scene", VersionReq::Latest).unwrap()
    ));
    assert!(Arc::ptr_eq(
        &latest,
        &store.load("writer", "scene", VersionReq::Exact(2)).unwrap()
    ));
}

#[test]
fn names_must_be_plain_identifiers() {
    let (dir, store) = fixture();
    let absolute = dir.path().join("writer").display().to_string();
    for (agent, task) in [
        ("../writer", "chapter"),
        ("writer", "../writer/chapter"),
        ("writer/..", "chapter"),
        (absolute.as_str(), "chapter"),
        ("writer", "chapter_v1.yaml"),
        ("", "chapter"),
        ("writer", ""),
        ("wri ter", "chapter"),
        ("writer\\x", "chapter"),
    ] {
        let err = store.load(agent, task, VersionReq::Latest).unwrap_err();
        assert!(
            matches!(err, TemplateError::InvalidName { .. }),
            "{agent:?}/{task:?}: {err:?}"
        );
        assert!(err.to_string().starts_with("invalid "), "{err}");
        let err = store.reload(agent, task, VersionReq::Exact(1)).unwrap_err();
        assert!(
            matches!(err, TemplateError::InvalidName { .. }),
            "{agent:?}/{task:?}: {err:?}"
        );
    }
    let err = store
        .load("../writer", "chapter", VersionReq::Latest)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid agent name \"../writer\": paths and separators are not allowed, only letters, digits, `_` and `-`"
    );
}

#[test]
fn invalid_files_are_refused_with_their_positions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("writer")).unwrap();
    std::fs::write(
        dir.path().join("writer/bad_v1.yaml"),
        "version: 2\nagent: writer\ntask: bad\nsystem_prompt: \"{% if %}\"\nuser_prompt_template: u\n",
    )
    .unwrap();
    let store = TemplateStore::open(dir.path()).unwrap();
    let err = store.load("writer", "bad", VersionReq::Latest).unwrap_err();
    let TemplateError::Invalid { path, diagnostics } = &err else {
        panic!("{err:?}")
    };
    assert!(path.ends_with("writer/bad_v1.yaml"));
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
    let text = err.to_string();
    assert!(
        text.contains("1:10: version 2 does not match the file name `bad_v1.yaml` (_v1)"),
        "{text}"
    );
    assert!(text.contains("4:"), "{text}");
}

#[test]
fn open_needs_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        TemplateStore::open(dir.path().join("missing")),
        Err(TemplateError::Io { .. })
    ));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = TemplateStore::open(&file).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
    let store = TemplateStore::open(dir.path()).unwrap();
    assert_eq!(store.dir(), dir.path());
}

#[test]
fn concurrent_loads_share_one_arc() {
    let (_dir, store) = fixture();
    let store = Arc::new(store);
    let loaded: Vec<Arc<prompt_templates::PromptTemplate>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                s.spawn(move || {
                    let version = if i % 2 == 0 {
                        VersionReq::Latest
                    } else {
                        VersionReq::Exact(10)
                    };
                    (0..50)
                        .map(|_| store.load("writer", "chapter", version.clone()).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(loaded.len(), 400);
    for t in &loaded {
        assert!(Arc::ptr_eq(t, &loaded[0]));
    }
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TemplateStore>();
    assert_send_sync::<prompt_templates::PromptTemplate>();
    assert_send_sync::<TemplateError>();
}

#[test]
fn labels_name_versions_and_move() {
    let (dir, store) = fixture();
    let production = || VersionReq::Label("production".into());
    // No labels file yet: an unknown label, saying there are none.
    let err = store.load("writer", "chapter", production()).unwrap_err();
    assert!(matches!(err, TemplateError::UnknownLabel { .. }), "{err:?}");
    assert!(
        err.to_string().contains("has no label `production`"),
        "{err}"
    );

    assert_eq!(
        store
            .set_label("writer", "chapter", "production", 2)
            .unwrap(),
        None
    );
    assert_eq!(user(&store, "writer", "chapter", production()), "two");
    assert_eq!(
        store
            .load("writer", "chapter", production())
            .unwrap()
            .version(),
        2
    );
    // Moving it takes effect at the next load; the previous version is returned.
    assert_eq!(
        store
            .set_label("writer", "chapter", "production", 10)
            .unwrap(),
        Some(2)
    );
    assert_eq!(user(&store, "writer", "chapter", production()), "ten");
    let text = std::fs::read_to_string(dir.path().join("labels.toml")).unwrap();
    assert!(
        text.contains("[writer.chapter]\nproduction = 10\n"),
        "{text}"
    );

    // A label of another template, a version that does not exist, a bad name.
    let err = store
        .load("writer", "scene", production())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("writer/scene has no label `production`"),
        "{err}"
    );
    let err = store
        .set_label("writer", "chapter", "staging", 7)
        .unwrap_err();
    assert!(matches!(err, TemplateError::NotFound { .. }), "{err:?}");
    let err = store.set_label("writer", "chapter", "v3", 1).unwrap_err();
    assert!(matches!(err, TemplateError::InvalidLabel(_)), "{err:?}");
    let err = store
        .load("writer", "chapter", VersionReq::Label("staging".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("(it has: production)"), "{err}");

    // Another process moves the label (a file of the same size renamed into place): seen at
    // the next load.
    let replacement = dir.path().join("labels.toml.new");
    std::fs::write(&replacement, "[writer.chapter]\nproduction = 1\n").unwrap();
    std::fs::rename(&replacement, dir.path().join("labels.toml")).unwrap();
    assert_eq!(user(&store, "writer", "chapter", production()), "one");
    std::fs::write(&replacement, "[writer.chapter]\nproduction = 2\n").unwrap();
    std::fs::rename(&replacement, dir.path().join("labels.toml")).unwrap();
    assert_eq!(user(&store, "writer", "chapter", production()), "two");

    // A broken labels file is an error naming its line, and the templates still load by number.
    std::fs::write(
        dir.path().join("labels.toml"),
        "[writer.chapter]\nproduction = \"two\"\n",
    )
    .unwrap();
    let err = store
        .load("writer", "chapter", production())
        .unwrap_err()
        .to_string();
    assert!(err.contains("labels.toml:2: "), "{err}");
    assert_eq!(
        user(&store, "writer", "chapter", VersionReq::Exact(1)),
        "one"
    );
}
