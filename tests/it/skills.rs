//! Skills: upload (zip and tar.gz, AstrBot's layouts and messages), listing, active
//! flags, file listing, reading and writing, the zip download, delete; every hostile
//! archive refused with the data folder left as it was; traversal attempts on every file
//! route refused; a skill's text reaching the model, which reads its files with
//! `read_skill_file`.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Resp, Server, bearer, http, upload};

/// A zip of (name, bytes) entries, deflated.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub const SKILL_MD: &[u8] =
    b"---\nname: csv-report\ndescription: Turn a CSV file into a short Markdown report.\n---\n# CSV report\nRead scripts/run.py.\n";

fn up(s: &Server, key: &str, filename: &str, bytes: &[u8]) -> Resp {
    upload(s, key, "/api/v1/skills", &[("file", Some(filename), Some("application/zip"), bytes)])
}

fn ok(s: &Server, r: &Resp) -> Value {
    s.expect(r, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{}", r.text());
    v["data"].clone()
}

fn soft_error(s: &Server, r: &Resp) -> String {
    s.expect(r, 200);
    let v = r.json();
    assert_eq!(v["status"], "error", "{}", r.text());
    assert!(v.get("data").is_none(), "{}", r.text());
    v["message"].as_str().unwrap().to_owned()
}

/// Every path under `dir` with its size, sorted.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            // The database and its journal change with every request.
            if name.starts_with("astrbot.db") || name.ends_with(".log") {
                continue;
            }
            out.push((name, if m.is_dir() { 0 } else { m.len() }));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn setup() -> (Server, String) {
    let s = Server::start();
    let admin = s.admin_token();
    let key = s.create_key(&admin, r#"{"name":"skills","scopes":["skill"]}"#).0;
    (s, key)
}

#[test]
fn upload_list_read_write_disable_download_delete() {
    let (s, k) = setup();
    let zip = zip_of(&[
        ("csv-report/SKILL.md", SKILL_MD),
        ("csv-report/scripts/run.py", b"print('hi')\n"),
        ("csv-report/data.bin", b"\x00\x01"),
        ("__MACOSX/csv-report/._SKILL.md", b"junk"),
    ]);
    let r = up(&s, &k, "csv-report.zip", &zip);
    s.expect(&r, 200);
    assert_eq!(r.json()["message"], "Skill uploaded successfully.");
    assert_eq!(r.json()["data"]["name"], "csv-report");
    assert_eq!(soft_error(&s, &up(&s, &k, "csv-report.zip", &zip)), "Skill csv-report already exists.");

    let list = ok(&s, &s.call("GET", "/api/v1/skills", &k, None));
    assert_eq!(list["runtime"], "none");
    assert_eq!(
        list["sandbox_cache"],
        json!({"exists": false, "ready": false, "count": 0, "updated_at": null})
    );
    let skill = &list["skills"][0];
    assert_eq!(skill["name"], "csv-report");
    assert_eq!(skill["description"], "Turn a CSV file into a short Markdown report.");
    assert_eq!(skill["active"], true);
    assert_eq!(skill["source_type"], "local_only");

    let files = ok(&s, &s.call("GET", "/api/v1/skills/csv-report/files", &k, None));
    let names: Vec<&str> =
        files["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["scripts", "data.bin", "SKILL.md"]);
    assert_eq!(files["entries"][1]["editable"], false);
    let sub = ok(&s, &s.call("GET", "/api/v1/skills/files?skill_name=csv-report&path=scripts", &k, None));
    assert_eq!(sub["path"], "scripts");
    assert_eq!(sub["entries"][0]["path"], "scripts/run.py");

    let f = ok(&s, &s.call("GET", "/api/v1/skills/csv-report/files/scripts/run.py", &k, None));
    assert_eq!(f["content"], "print('hi')\n");
    assert_eq!(f["path"], "scripts/run.py");
    let r = http(
        s.addr,
        "PUT",
        "/api/v1/skills/csv-report/files/scripts/run.py",
        &[("Authorization", &bearer(&k)), ("Content-Type", "text/plain")],
        Some(b"print('bye')\n"),
    );
    assert_eq!(ok(&s, &r), json!({"name": "csv-report", "path": "scripts/run.py", "size": 13}));
    let f = ok(&s, &s.call("GET", "/api/v1/skills/file?skill_name=csv-report&path=scripts/run.py", &k, None));
    assert_eq!(f["content"], "print('bye')\n");
    let body =
        json!({"skill_name": "csv-report", "path": "SKILL.md", "content": "---\ndescription: New.\n---\n"});
    ok(&s, &s.call("PUT", "/api/v1/skills/file", &k, Some(body)));
    let list = ok(&s, &s.call("GET", "/api/v1/skills", &k, None));
    assert_eq!(list["skills"][0]["description"], "New.");
    // No creation, no binary, no invalid UTF-8.
    let new = json!({"skill_name": "csv-report", "path": "new.md", "content": "x"});
    assert_eq!(soft_error(&s, &s.call("PUT", "/api/v1/skills/file", &k, Some(new))), "Skill file not found");
    let bin = json!({"skill_name": "csv-report", "path": "data.bin", "content": "x"});
    assert_eq!(soft_error(&s, &s.call("PUT", "/api/v1/skills/file", &k, Some(bin))), "Unsupported file type");
    let r = http(
        s.addr,
        "PUT",
        "/api/v1/skills/csv-report/files/SKILL.md",
        &[("Authorization", &bearer(&k))],
        Some(b"\xff\xfe"),
    );
    s.expect(&r, 400);
    let big = vec![b'a'; 600 << 10];
    let r = http(
        s.addr,
        "PUT",
        "/api/v1/skills/csv-report/files/SKILL.md",
        &[("Authorization", &bearer(&k))],
        Some(&big),
    );
    assert_eq!(soft_error(&s, &r), "File content is too large");

    let r = s.call("PATCH", "/api/v1/skills/csv-report", &k, Some(json!({"enabled": false})));
    assert_eq!(ok(&s, &r), json!({"name": "csv-report", "active": false}));
    let list = ok(&s, &s.call("GET", "/api/v1/skills", &k, None));
    assert_eq!(list["skills"][0]["active"], false);
    let r = s.call(
        "PATCH",
        "/api/v1/skills/by-name",
        &k,
        Some(json!({"skill_name": "csv-report", "active": true})),
    );
    assert_eq!(ok(&s, &r)["active"], true);

    let r = s.call("GET", "/api/v1/skills/csv-report/archive", &k, None);
    s.expect(&r, 200);
    assert_eq!(r.header("content-type"), Some("application/zip"));
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(r.body.clone())).unwrap();
    assert!(z.by_name("csv-report/scripts/run.py").is_ok());
    let r = s.call("GET", "/api/v1/skills/nope/archive", &k, None);
    s.expect_error(&r, 404, "Local skill not found");
    let r = s.call("GET", "/api/v1/skills/a%20b/archive", &k, None);
    s.expect_error(&r, 400, "Invalid skill name");

    assert_eq!(
        ok(&s, &s.call("DELETE", "/api/v1/skills/csv-report", &k, None)),
        json!({"name": "csv-report"})
    );
    assert!(!s.data.path().join("skills/csv-report").exists());
    assert_eq!(
        ok(&s, &s.call("DELETE", "/api/v1/skills/by-name?skill_name=gone", &k, None)),
        json!({"name": "gone"})
    );
    assert_eq!(ok(&s, &s.call("GET", "/api/v1/skills", &k, None))["skills"], json!([]));
}

#[test]
fn layouts_and_messages() {
    let (s, k) = setup();
    // SKILL.md at the root: named after the stem, whitespace as _.
    let r = up(&s, &k, "my skill.zip", &zip_of(&[("SKILL.md", SKILL_MD)]));
    assert_eq!(ok(&s, &r)["name"], "my_skill");
    // Several top-level folders: each with SKILL.md is a skill.
    let z = zip_of(&[
        ("a/SKILL.md", SKILL_MD),
        ("b/skill.md", SKILL_MD),
        ("c/readme.txt", b"x"),
        ("bad!/SKILL.md", SKILL_MD),
    ]);
    assert_eq!(ok(&s, &up(&s, &k, "many.zip", &z))["name"], "a, b");
    assert!(s.data.path().join("skills/b/SKILL.md").is_file(), "skill.md is renamed");
    let z = zip_of(&[("a/SKILL.md", SKILL_MD), ("d/SKILL.md", SKILL_MD)]);
    assert!(
        soft_error(&s, &up(&s, &k, "many.zip", &z))
            .starts_with("One or more skills from the archive already exist")
    );
    assert!(!s.data.path().join("skills/d").exists());
    // One folder: the stem names it.
    assert_eq!(ok(&s, &up(&s, &k, "stem.zip", &zip_of(&[("inner/SKILL.md", SKILL_MD)])))["name"], "stem");
    let z = zip_of(&[("x/readme.md", b"x")]);
    assert_eq!(
        soft_error(&s, &up(&s, &k, "x.zip", &z)),
        "SKILL.md not found in the root of the zip archive."
    );
    let z = zip_of(&[("x/readme.md", b"x"), ("y/readme.md", b"x")]);
    assert_eq!(
        soft_error(&s, &up(&s, &k, "x.zip", &z)),
        "No valid SKILL.md found in any folder of the zip archive."
    );
    assert_eq!(soft_error(&s, &up(&s, &k, "x.txt", b"hello")), "Only .zip files are supported");
    assert_eq!(soft_error(&s, &up(&s, &k, "x.zip", b"hello")), "Uploaded file is not a valid zip archive.");
    assert_eq!(soft_error(&s, &up(&s, &k, "x.zip", &zip_of(&[]))), "Zip archive is empty.");
    assert_eq!(
        soft_error(&s, &up(&s, &k, "bad name!.zip", &zip_of(&[("SKILL.md", SKILL_MD)]))),
        "Invalid skill name."
    );
    let r = upload(&s, &k, "/api/v1/skills", &[("other", None, None, b"x")]);
    assert_eq!(soft_error(&s, &r), "Missing file");
    // tar.gz, beyond AstrBot.
    let mut tar =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut h = tar::Header::new_gnu();
    h.set_size(SKILL_MD.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "tarred/SKILL.md", SKILL_MD).unwrap();
    let gz = tar.into_inner().unwrap().finish().unwrap();
    assert_eq!(ok(&s, &up(&s, &k, "tarred.tar.gz", &gz))["name"], "tarred");
}

/// A zip whose local header for `name` declares `declared` bytes where the data holds more.
fn lying_zip(real: &[u8], declared: u32) -> Vec<u8> {
    let mut z = zip_of(&[("liar/SKILL.md", real)]);
    // Patch the uncompressed size in the local header (offset 22) and the central
    // directory entry (offset 24 from its signature).
    z[22..26].copy_from_slice(&declared.to_le_bytes());
    let cd = z.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    z[cd + 24..cd + 28].copy_from_slice(&declared.to_le_bytes());
    z
}

/// A zip holding `dup/SKILL.md` twice (the writer refuses that, so a name is patched).
fn dup_zip() -> Vec<u8> {
    let mut z = zip_of(&[("dup/SKILL.md", SKILL_MD), ("dup/SKILL.mX", b"again")]);
    while let Some(at) = z.windows(12).position(|w| w == b"dup/SKILL.mX") {
        z[at + 11] = b'd';
    }
    z
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let (s, k) = setup();
    ok(&s, &up(&s, &k, "keep.zip", &zip_of(&[("SKILL.md", SKILL_MD)])));
    let before = tree(s.data.path());

    let mut symlink = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    symlink.start_file("evil/SKILL.md", opts).unwrap();
    symlink.write_all(SKILL_MD).unwrap();
    symlink.add_symlink("evil/passwd", "/etc/passwd", opts).unwrap();
    let symlink = symlink.finish().unwrap().into_inner();

    let many: Vec<(String, Vec<u8>)> = (0..1001).map(|i| (format!("many/f{i}.txt"), b"x".to_vec())).collect();
    let many_refs: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let bomb = vec![b'a'; 17 << 20];
    let ratio = vec![b'a'; 8 << 20];
    let deep = format!("deep/{}SKILL.md", "d/".repeat(20));

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "slip.zip",
            zip_of(&[("slip/SKILL.md", SKILL_MD), ("../x", b"x")]),
            "Zip archive contains invalid relative paths.",
        ),
        (
            "abs.zip",
            zip_of(&[("abs/SKILL.md", SKILL_MD), ("/etc/x", b"x")]),
            "Zip archive contains absolute paths.",
        ),
        (
            "nested.zip",
            zip_of(&[("n/SKILL.md", SKILL_MD), ("n/../../x", b"x")]),
            "Zip archive contains invalid relative paths.",
        ),
        (
            "back.zip",
            zip_of(&[("b/SKILL.md", SKILL_MD), ("b\\..\\..\\x", b"x")]),
            "Zip archive contains invalid relative paths.",
        ),
        ("link.zip", symlink, "Archive contains a link or special file"),
        ("liar.zip", lying_zip(&[b'z'; 4096], 10), "Uploaded file is not a valid zip archive."),
        ("many.zip", zip_of(&many_refs), "Archive is too large: more than 1000 entries"),
        ("huge.zip", zip_of(&[("huge/SKILL.md", SKILL_MD), ("huge/big.txt", &bomb)]), "Archive is too large"),
        ("ratio.zip", zip_of(&[("ratio/SKILL.md", SKILL_MD), ("ratio/r.txt", &ratio)]), "a zip bomb"),
        ("dup.zip", dup_zip(), "the same path twice"),
        ("deep.zip", zip_of(&[(deep.as_str(), SKILL_MD)]), "Zip archive contains invalid relative paths."),
        ("notzip.zip", b"PK\x03\x04 not really a zip".to_vec(), "Uploaded file is not a valid zip archive."),
    ];
    // tar.gz: a symlink, a hard link, `..` and an absolute name.
    let tgz = |kind: tar::EntryType, name: &[u8], data: &[u8]| {
        let mut tar =
            tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
        let mut h = tar::Header::new_gnu();
        h.set_size(SKILL_MD.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, "t/SKILL.md", SKILL_MD).unwrap();
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        if kind != tar::EntryType::Regular {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        tar.append(&h, data).unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    };
    let mut cases = cases;
    cases.push(("sym.tar.gz", tgz(tar::EntryType::Symlink, b"t/passwd", b""), "link or special file"));
    cases.push(("hard.tar.gz", tgz(tar::EntryType::Link, b"t/passwd", b""), "link or special file"));
    cases.push(("dev.tar.gz", tgz(tar::EntryType::Char, b"t/null", b""), "link or special file"));
    cases.push(("slip.tar.gz", tgz(tar::EntryType::Regular, b"../x", b"x"), "invalid relative paths"));
    cases.push(("abs.tar.gz", tgz(tar::EntryType::Regular, b"/tmp/x", b"x"), "absolute paths"));
    cases.push(("junk.tgz", b"not gzip".to_vec(), "not a valid archive"));
    for (name, bytes, want) in cases {
        let r = up(&s, &k, name, &bytes);
        let message = soft_error(&s, &r);
        assert!(message.contains(want), "{name}: {message}");
        assert_eq!(tree(s.data.path()), before, "{name} left something behind");
    }
}

#[test]
fn no_file_route_leaves_the_skill() {
    let (s, k) = setup();
    ok(
        &s,
        &up(
            &s,
            &k,
            "csv-report.zip",
            &zip_of(&[("csv-report/SKILL.md", SKILL_MD), ("csv-report/a.md", b"a")]),
        ),
    );
    std::fs::write(s.data.path().join("secret.md"), "top secret").unwrap();
    std::fs::create_dir_all(s.data.path().join("skills/other")).unwrap();
    std::fs::write(s.data.path().join("skills/other/SKILL.md"), "other").unwrap();
    let dir = s.data.path().join("skills/csv-report");
    std::os::unix::fs::symlink(s.data.path().join("secret.md"), dir.join("out.md")).unwrap();
    std::os::unix::fs::symlink(s.data.path(), dir.join("outdir")).unwrap();
    std::os::unix::fs::symlink(s.data.path().join("skills/other"), s.data.path().join("skills/linked"))
        .unwrap();

    let files = ok(&s, &s.call("GET", "/api/v1/skills/csv-report/files", &k, None));
    let names: Vec<&str> =
        files["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.md", "SKILL.md"], "symlinks leading out are not listed");

    let reads = [
        "/api/v1/skills/csv-report/files/out.md",
        "/api/v1/skills/csv-report/files/outdir/secret.md",
        "/api/v1/skills/csv-report/files/..%2F..%2Fsecret.md",
        "/api/v1/skills/csv-report/files/%2E%2E/%2E%2E/secret.md",
        "/api/v1/skills/csv-report/files/%2Fetc%2Fpasswd",
        "/api/v1/skills/csv-report/files/..%5C..%5Csecret.md",
        "/api/v1/skills/file?skill_name=csv-report&path=../../secret.md",
        "/api/v1/skills/file?skill_name=csv-report&path=/etc/passwd",
        "/api/v1/skills/file?skill_name=csv-report&path=outdir/secret.md",
        "/api/v1/skills/file?skill_name=..&path=secret.md",
        "/api/v1/skills/file?skill_name=csv-report%2F..&path=secret.md",
        "/api/v1/skills/file?skill_name=linked&path=SKILL.md",
        "/api/v1/skills/..%2F..%2F/files/secret.md",
        "/api/v1/skills/files?skill_name=csv-report&path=..",
        "/api/v1/skills/files?skill_name=csv-report&path=outdir",
        "/api/v1/skills/files?skill_name=csv-report&path=/",
        "/api/v1/skills/csv-report/files?path=../other",
        "/api/v1/skills/..%2F/files",
        "/api/v1/skills/..%2Fcsv-report/archive",
    ];
    for url in reads {
        let r = s.call("GET", url, &k, None);
        let text = r.text();
        assert!(!text.contains("top secret") && !text.contains("other"), "{url}: {text}");
        assert!(r.status != 200 || r.json()["status"] == "error", "{url}: {text}");
    }
    for (path, body) in [
        ("/api/v1/skills/csv-report/files/out.md", "pwned"),
        ("/api/v1/skills/csv-report/files/outdir/secret.md", "pwned"),
        ("/api/v1/skills/csv-report/files/..%2F..%2Fsecret.md", "pwned"),
        ("/api/v1/skills/csv-report/files/%2Fetc%2Fhostname", "pwned"),
    ] {
        let r = http(s.addr, "PUT", path, &[("Authorization", &bearer(&k))], Some(body.as_bytes()));
        assert!(!soft_error(&s, &r).is_empty(), "{path}");
    }
    for (name, p) in [
        ("csv-report", "../../secret.md"),
        ("csv-report", "out.md"),
        ("..", "secret.md"),
        ("linked", "SKILL.md"),
    ] {
        let body = json!({"skill_name": name, "path": p, "content": "pwned"});
        soft_error(&s, &s.call("PUT", "/api/v1/skills/file", &k, Some(body)));
    }
    assert_eq!(std::fs::read_to_string(s.data.path().join("secret.md")).unwrap(), "top secret");
    // Delete validates the name (AstrBot's has a traversal).
    for url in [
        "/api/v1/skills/..",
        "/api/v1/skills/%2E%2E",
        "/api/v1/skills/by-name?skill_name=..",
        "/api/v1/skills/by-name?skill_name=../skills",
    ] {
        let r = s.call("DELETE", url, &k, None);
        assert!(r.status != 200 || r.json()["status"] == "error", "{url}: {}", r.text());
    }
    assert!(s.data.path().join("secret.md").exists() && s.data.path().join("skills/other/SKILL.md").exists());
}

#[test]
fn neo_sync_needs_a_configured_endpoint() {
    let (s, k) = setup();
    let r = s.call("POST", "/api/v1/skills/neo/sync", &k, Some(json!({"skill_key": "x"})));
    assert_eq!(
        soft_error(&s, &r),
        "Shipyard Neo endpoint or access token not configured. Set them in Dashboard or ensure Bay's credentials.json is accessible."
    );
}

#[test]
fn the_model_sees_active_skills_and_reads_their_files() {
    use crate::fake_llm::{FakeLlm, Script, Step, connect};
    let s = Server::start();
    let admin = s.admin_token();
    let (k, _) = s.create_key(&admin, r#"{"scopes":["chat","provider","persona","config","skill"]}"#);
    let fake = FakeLlm::start(Script::reply(&["done"]));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    let z = zip_of(&[("csv-report/SKILL.md", SKILL_MD), ("csv-report/scripts/run.py", b"print('hi')\n")]);
    ok(&s, &up(&s, &k, "csv-report.zip", &z));
    fake.set(|sc| {
        sc.steps = vec![
            Step::calls(
                "",
                &[
                    ("c1", "read_skill_file", r#"{"skill_name":"csv-report"}"#),
                    ("c2", "read_skill_file", r#"{"skill_name":"csv-report","path":"scripts/run.py"}"#),
                    ("c3", "read_skill_file", r#"{"skill_name":"csv-report","path":"../../astrbot.db"}"#),
                ],
            ),
            Step::text(&["ok"]),
        ]
        .into()
    });
    let r = s.call(
        "POST",
        "/api/v1/chat",
        &k,
        Some(json!({"username": "alice", "session_id": "sk-1", "message": "report"})),
    );
    s.expect(&r, 200);
    let reqs = fake.requests();
    let system = reqs[0].messages()[0]["content"].as_str().unwrap().to_owned();
    assert!(system.contains("## Skills"), "{system}");
    assert!(system.contains("- **csv-report**: Turn a CSV file into a short Markdown report."), "{system}");
    assert!(system.contains("read_skill_file"), "{system}");
    let names: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"read_skill_file"), "{names:?}");
    let msgs = reqs[1].messages();
    let results: Vec<&str> =
        msgs.iter().filter(|m| m["role"] == "tool").map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(results[0], std::str::from_utf8(SKILL_MD).unwrap());
    assert_eq!(results[1], "print('hi')\n");
    assert!(results[2].starts_with("error: Invalid relative path"), "{}", results[2]);

    // Disabled: neither in the prompt nor offered.
    ok(&s, &s.call("PATCH", "/api/v1/skills/csv-report", &k, Some(json!({"enabled": false}))));
    fake.set(|sc| sc.steps = vec![Step::text(&["ok"])].into());
    let r = s.call(
        "POST",
        "/api/v1/chat",
        &k,
        Some(json!({"username": "alice", "session_id": "sk-2", "message": "report"})),
    );
    s.expect(&r, 200);
    let last = fake.last();
    assert!(!last.messages()[0]["content"].as_str().unwrap_or_default().contains("csv-report"));
    let names: Vec<&str> = last.body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"read_skill_file"), "{names:?}");

    // Active again, but the session's persona keeps another skill only: the prompt lists
    // none of this one, and the tool refuses to read it.
    ok(&s, &s.call("PATCH", "/api/v1/skills/csv-report", &k, Some(json!({"enabled": true}))));
    let other = zip_of(&[("other/SKILL.md", b"---\ndescription: Another skill.\n---\nBody.\n")]);
    ok(&s, &up(&s, &k, "other.zip", &other));
    let persona = json!({"persona_id": "narrow", "system_prompt": "Be brief.", "skills": ["other"]});
    s.expect(&s.call("POST", "/api/v1/personas", &k, Some(persona)), 200);
    let chat = |message: &str| {
        let body = json!({"username": "alice", "session_id": "sk-3", "message": message});
        let r = s.call("POST", "/api/v1/chat", &k, Some(body));
        s.expect(&r, 200);
    };
    chat("/persona narrow");
    fake.set(|sc| {
        sc.steps = vec![
            Step::calls("", &[("c4", "read_skill_file", r#"{"skill_name":"csv-report"}"#)]),
            Step::text(&["ok"]),
        ]
        .into()
    });
    chat("report");
    let reqs = fake.requests();
    let (asked, answered) = (&reqs[reqs.len() - 2], &reqs[reqs.len() - 1]);
    let system = asked.messages()[0]["content"].as_str().unwrap_or_default().to_owned();
    assert!(system.contains("**other**") && !system.contains("csv-report"), "{system}");
    let result = answered.messages().iter().find(|m| m["role"] == "tool").map(|m| m["content"].clone());
    assert_eq!(result, Some(json!("error: the skill csv-report is not available to this persona")));
}

/// A fake Bay: answers the release listing, the candidate and the payload; records paths.
fn fake_bay() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.to_ascii_lowercase().starts_with("authorization:") {
                    auth = h.trim().to_owned();
                }
                if h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
            log.lock().unwrap().push(path.clone());
            let body = if !auth.ends_with("Bearer sk-bay-test") {
                None
            } else if path.starts_with("/v1/skills/releases?skill_key=csv_report") {
                Some(
                    json!({"items": [{"id": "rel_1", "skill_key": "csv_report", "candidate_id": "cand_1", "stage": "stable"}]}),
                )
            } else if path.starts_with("/v1/skills/releases?skill_key=") {
                Some(json!({"items": []}))
            } else if path == "/v1/skills/candidates/cand_1" {
                Some(json!({"id": "cand_1", "payload_ref": "blob:1"}))
            } else if path == "/v1/skills/payloads/blob%3A1" {
                Some(
                    json!({"payload_ref": "blob:1", "kind": "skill", "payload": {"skill_markdown": "# CSV report\n\n## Description\n\nTurn CSV   into a report.\n"}}),
                )
            } else {
                None
            };
            let (status, text) = match body {
                Some(b) => ("200 OK", b.to_string()),
                None => ("404 Not Found", r#"{"detail":"not found"}"#.to_owned()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (base, seen)
}

#[test]
fn neo_sync_writes_the_release_as_a_local_skill() {
    let s = Server::start();
    let admin = s.admin_token();
    let (base, seen) = fake_bay();
    let cfg = json!({"provider_settings": {"sandbox": {"shipyard_neo_endpoint": base, "shipyard_neo_access_token": "sk-bay-test"}}});
    s.expect(&s.call("PUT", "/api/v1/system-config", &admin, Some(cfg)), 200);
    let r = s.call("POST", "/api/v1/skills/neo/sync", &admin, Some(json!({"skill_key": "csv_report"})));
    let data = ok(&s, &r);
    assert_eq!(data["local_skill_name"], "neo_csv_report");
    assert_eq!(data["release_id"], "rel_1");
    assert_eq!(data["payload_ref"], "blob:1");
    let md = std::fs::read_to_string(s.data.path().join("skills/neo_csv_report/SKILL.md")).unwrap();
    assert!(
        md.starts_with(
            "---\nname: neo_csv_report\ndescription: Turn CSV into a report.\n---\n\n# CSV report"
        ),
        "{md}"
    );
    let list = ok(&s, &s.call("GET", "/api/v1/skills", &admin, None));
    assert_eq!(list["skills"][0]["name"], "neo_csv_report");
    assert_eq!(list["skills"][0]["active"], true);
    assert!(s.data.path().join("skills/neo_skill_map.json").is_file());
    assert!(seen.lock().unwrap().iter().any(|p| p.contains("stage=stable")));
    let r = s.call("POST", "/api/v1/skills/neo/sync", &admin, Some(json!({"skill_key": "other"})));
    assert_eq!(soft_error(&s, &r), "No active stable release found for skill_key: other");
    let r = s.call("POST", "/api/v1/skills/neo/sync", &admin, Some(json!({})));
    assert_eq!(soft_error(&s, &r), "Missing release_id or skill_key");
}
