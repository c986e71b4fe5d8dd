//! Personas and persona folders, with the bodies and messages of AstrBot's dashboard.

use serde_json::{Value, json};

use crate::support::Server;

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["persona"]}"#);
    (s, key)
}

#[test]
fn create_get_list_shapes() {
    let (s, k) = setup();
    let body = json!({"persona_id":"tutor","system_prompt":"  You are a patient math tutor.  ",
                      "begin_dialogs":["Hi","Hello! What shall we study?"],"tools":[],"skills":null,"folder_id":null});
    let r = s.call("POST", "/api/v1/personas", &k, Some(body));
    s.expect(&r, 200);
    let d = &r.json()["data"];
    assert_eq!(d["message"], "人格创建成功");
    let p = &d["persona"];
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "persona_id",
            "system_prompt",
            "begin_dialogs",
            "tools",
            "skills",
            "custom_error_message",
            "folder_id",
            "sort_order",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(p["system_prompt"], "You are a patient math tutor.", "trimmed");
    assert_eq!(
        (p["tools"].clone(), p["skills"].clone()),
        (json!([]), json!([])),
        "the create answer maps null to []"
    );
    assert!(!p["created_at"].as_str().unwrap().contains('+'), "naive ISO time like AstrBot");
    let got = s.call("GET", "/api/v1/personas/tutor", &k, None).json();
    assert_eq!(got["data"]["skills"], Value::Null, "stored null means all skills");
    assert_eq!(got["data"]["tools"], json!([]));
    let by_id = s.call("GET", "/api/v1/personas/by-id?persona_id=tutor", &k, None).json();
    assert_eq!(by_id["data"], got["data"]);
    let list = s.call("GET", "/api/v1/personas", &k, None).json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "the built-in default is not listed");
}

#[test]
fn every_persona_message() {
    let (s, k) = setup();
    let cases = [
        (json!({"system_prompt":"x"}), "人格ID不能为空"),
        (json!({"persona_id":"  ","system_prompt":"x"}), "人格ID不能为空"),
        (json!({"persona_id":"a"}), "系统提示词不能为空"),
        (json!({"persona_id":"a","system_prompt":"   "}), "系统提示词不能为空"),
        (
            json!({"persona_id":"a","system_prompt":"x","begin_dialogs":["one"]}),
            "预设对话数量必须为偶数（用户和助手轮流对话）",
        ),
        (json!({"persona_id":"a","system_prompt":"x","tools":"all"}), "tools must be a list of strings"),
    ];
    for (body, message) in cases {
        s.expect_error(&s.call("POST", "/api/v1/personas", &k, Some(body)), 400, message);
    }
    s.expect(
        &s.call("POST", "/api/v1/personas", &k, Some(json!({"persona_id":"a","system_prompt":"x"}))),
        200,
    );
    s.expect_error(
        &s.call("POST", "/api/v1/personas", &k, Some(json!({"persona_id":"a","system_prompt":"y"}))),
        400,
        "Persona with ID a already exists.",
    );
    s.expect_error(
        &s.call("GET", "/api/v1/personas/zz", &k, None),
        400,
        "Persona with ID zz does not exist.",
    );
    s.expect_error(
        &s.call("PUT", "/api/v1/personas/by-id", &k, Some(json!({"system_prompt":"y"}))),
        400,
        "缺少必要参数: persona_id",
    );
    s.expect_error(
        &s.call("PUT", "/api/v1/personas/zz", &k, Some(json!({"system_prompt":"y"}))),
        400,
        "Persona with ID zz does not exist.",
    );
    s.expect_error(
        &s.call("PUT", "/api/v1/personas/a", &k, Some(json!({"begin_dialogs":["1","2","3"]}))),
        400,
        "预设对话数量必须为偶数（用户和助手轮流对话）",
    );
    s.expect_error(
        &s.call("DELETE", "/api/v1/personas/zz", &k, None),
        400,
        "Persona with ID zz does not exist.",
    );
    s.expect_error(&s.call("GET", "/api/v1/personas/by-id", &k, None), 400, "Missing key: persona_id");
}

#[test]
fn update_rules() {
    let (s, k) = setup();
    s.call(
        "POST",
        "/api/v1/personas",
        &k,
        Some(json!({"persona_id":"a","system_prompt":"x","tools":["t1"],"custom_error_message":"oops"})),
    );
    let r = s.call(
        "PUT",
        "/api/v1/personas/a",
        &k,
        Some(json!({"system_prompt":"new","folder_id":"f","sort_order":9})),
    );
    assert_eq!(r.json()["data"], json!({"message":"人格更新成功"}));
    let p = s.call("GET", "/api/v1/personas/a", &k, None).json()["data"].clone();
    assert_eq!(
        (p["system_prompt"].clone(), p["tools"].clone(), p["custom_error_message"].clone()),
        (json!("new"), json!(["t1"]), json!("oops"))
    );
    assert_eq!(
        (p["folder_id"].clone(), p["sort_order"].clone()),
        (Value::Null, json!(0)),
        "PUT never moves or reorders"
    );
    // Present keys change, explicit null included; a body persona_id overrides the path.
    s.expect(
        &s.call(
            "PUT",
            "/api/v1/personas/by-id",
            &k,
            Some(json!({"persona_id":"a","tools":null,"custom_error_message":"  "})),
        ),
        200,
    );
    let p = s.call("GET", "/api/v1/personas/a", &k, None).json()["data"].clone();
    assert_eq!((p["tools"].clone(), p["custom_error_message"].clone()), (Value::Null, Value::Null));
    s.expect(&s.call("DELETE", "/api/v1/personas/by-id?persona_id=a", &k, None), 200);
    s.expect(&s.call("GET", "/api/v1/personas/a", &k, None), 400);
}

/// Folder `Work` holding `Sub`, and personas p1 and p2 moved into `Work` (p2 sorted
/// first) while p3 stays at the root; returns the ids of `Work` and `Sub`.
fn folders_with_personas(s: &Server, k: &str) -> (String, String) {
    let r = s.call("POST", "/api/v1/persona-folders", k, Some(json!({"name":"Work","description":"d"})));
    assert_eq!(r.json()["data"]["message"], "文件夹创建成功");
    let work = r.json()["data"]["folder"]["folder_id"].as_str().unwrap().to_owned();
    let sub = s.call("POST", "/api/v1/persona-folders", k, Some(json!({"name":"Sub","parent_id":work})));
    let sub = sub.json()["data"]["folder"]["folder_id"].as_str().unwrap().to_owned();
    for id in ["p1", "p2", "p3"] {
        s.call("POST", "/api/v1/personas", k, Some(json!({"persona_id":id,"system_prompt":"x"})));
    }
    let r = s.call("POST", "/api/v1/personas/move", k, Some(json!({"persona_id":"p1","folder_id":work})));
    assert_eq!(r.json()["data"]["message"], "人格移动成功");
    s.call("POST", "/api/v1/personas/move", k, Some(json!({"persona_id":"p2","folder_id":work})));
    let r = s.call("POST", "/api/v1/personas/reorder", k, Some(json!({"items":[{"id":"p1","type":"persona","sort_order":5},{"id":"p2","type":"persona","sort_order":1}]})));
    s.expect(&r, 200);
    (work, sub)
}

/// The persona ids `GET /api/v1/personas{query}` lists.
fn persona_ids(s: &Server, k: &str, query: &str) -> Vec<String> {
    let v = s.call("GET", &format!("/api/v1/personas{query}"), k, None).json();
    v["data"].as_array().unwrap().iter().map(|p| p["persona_id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn folder_refusals_name_the_problem() {
    let (s, k) = setup();
    for (path, body, message) in [
        ("/api/v1/persona-folders", json!({"name":" "}), "文件夹名称不能为空"),
        (
            "/api/v1/personas/move",
            json!({"persona_id":"zz","folder_id":null}),
            "Persona with ID zz does not exist.",
        ),
    ] {
        s.check_error("POST", path, &k, Some(body), 400, message);
    }
}

#[test]
fn personas_are_listed_by_folder_in_sort_order() {
    let (s, k) = setup();
    let (work, _) = folders_with_personas(&s, &k);
    assert_eq!(persona_ids(&s, &k, &format!("?folder_id={work}")), ["p2", "p1"], "by sort_order");
    assert_eq!(persona_ids(&s, &k, "?folder_id="), ["p3"], "an empty folder_id is the root");
    assert_eq!(persona_ids(&s, &k, ""), ["p1", "p2", "p3"]);
}

#[test]
fn the_tree_nests_folders_and_their_personas() {
    let (s, k) = setup();
    let (work, sub) = folders_with_personas(&s, &k);
    let tree = s.call("GET", "/api/v1/personas/tree", &k, None).json()["data"].clone();
    assert_eq!(tree["folders"][0]["name"], "Work");
    assert_eq!(tree["folders"][0]["children"][0]["folder_id"], sub.as_str());
    assert_eq!(tree["folders"][0]["personas"].as_array().unwrap().len(), 2);
    assert_eq!(tree["personas"][0]["persona_id"], "p3");
    let roots = s.call("GET", "/api/v1/persona-folders", &k, None).json();
    assert_eq!(roots["data"].as_array().unwrap().len(), 1);
    let children = s.call("GET", &format!("/api/v1/persona-folders?parent_id={work}"), &k, None).json();
    assert_eq!(children["data"][0]["name"], "Sub");
}

#[test]
fn put_updates_a_folder_quietly_ignoring_unknown_ids() {
    let (s, k) = setup();
    let (work, _) = folders_with_personas(&s, &k);
    let r = s.call(
        "PUT",
        &format!("/api/v1/persona-folders/{work}"),
        &k,
        Some(json!({"name":"Office","description":null})),
    );
    assert_eq!(r.json()["data"]["message"], "文件夹更新成功");
    let f = s.call("GET", "/api/v1/persona-folders", &k, None).json()["data"][0].clone();
    assert_eq!((f["name"].clone(), f["description"].clone()), (json!("Office"), Value::Null));
    s.expect(&s.call("PUT", "/api/v1/persona-folders/unknown", &k, Some(json!({"name":"x"}))), 200);
}

#[test]
fn a_deleted_folder_moves_its_personas_to_the_root_but_not_its_sub_folders() {
    let (s, k) = setup();
    let (work, sub) = folders_with_personas(&s, &k);
    let r = s.call("DELETE", &format!("/api/v1/persona-folders/{work}"), &k, None);
    assert_eq!(r.json()["data"]["message"], "文件夹删除成功");
    assert_eq!(
        persona_ids(&s, &k, "?folder_id="),
        ["p3", "p2", "p1"],
        "its personas moved to the root, by sort_order"
    );
    let sub_after = s.call("GET", &format!("/api/v1/persona-folders?parent_id={work}"), &k, None).json();
    assert_eq!(sub_after["data"][0]["folder_id"], sub.as_str(), "sub-folders are not touched");
}

#[test]
fn other_scopes_are_refused() {
    let s = Server::start();
    let (chat, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","config"]}"#);
    s.expect_error(&s.call("GET", "/api/v1/personas", &chat, None), 403, "Insufficient API key scope");
    s.expect_error(
        &s.call("POST", "/api/v1/persona-folders", &chat, Some(json!({"name":"x"}))),
        403,
        "Insufficient API key scope",
    );
}
