//! The knowledge base: `astrbot kb add/list/remove`, the built-in provider answering from
//! a user's collection (Chinese too, through the trigram index), and its fallback.

use serde_json::{Value, json};

use crate::support::{Server, cli};

fn ask(s: &Server, key: &str, question: &str) -> Value {
    let auth = format!("Bearer {key}");
    let body = json!({"username": "alice", "message": question}).to_string();
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Accept", "application/json")],
        Some(&body),
    );
    s.expect(&r, 200);
    r.json()["data"].clone()
}

#[test]
fn collections_from_the_cli_answer_chats_with_sources() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    let docs = s.data.path().join("notes");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("garden.md"), "# Garden notes\n\n## Watering tomatoes\n\nWater the tomatoes every morning before nine.\n\n## 浇花\n\n每天早上给玫瑰浇水两次。\n").unwrap();
    std::fs::write(
        docs.join("menu.html"),
        "<h1>Menu</h1><h2>Soup of the day</h2><p>Pumpkin soup &amp; bread.</p>",
    )
    .unwrap();
    std::fs::write(docs.join("ignored.bin"), [0u8, 1, 2]).unwrap();
    let (code, out, err) =
        cli(s.data.path(), &["kb", "add", "--collection", "home", docs.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("collection home: 3 passages from 2 files"), "{out}");
    assert!(err.contains("skipping"), "{err}");
    let (_, list, _) = cli(s.data.path(), &["kb", "list"], None);
    assert!(list.contains("home\t3 passages") && list.contains("docs\t"), "{list}");

    let a = ask(&s, &key, "When should I water the tomatoes?");
    assert!(a["response"].as_str().unwrap().contains("every morning before nine"), "{a}");
    assert_eq!(
        a["sources"][0],
        json!({"title": "Garden notes › Watering tomatoes", "url": "kb:home/garden.md#watering-tomatoes"})
    );
    let a = ask(&s, &key, "玫瑰浇水");
    assert!(a["response"].as_str().unwrap().contains("每天早上给玫瑰浇水两次"), "{a}");
    let a = ask(&s, &key, "玫瑰");
    assert!(
        a["response"].as_str().unwrap().contains("每天早上给玫瑰浇水两次"),
        "two-character words are found too: {a}"
    );
    let a = ask(&s, &key, "What is the soup of the day?");
    assert!(a["response"].as_str().unwrap().contains("Pumpkin soup & bread."), "{a}");

    let a = ask(&s, &key, "zzzqqq xxyyzz");
    assert!(a["response"].as_str().unwrap().contains("/docs/providers"), "no match says so: {a}");
    assert_eq!(a["sources"], json!([]));

    let (code, _, err) = cli(s.data.path(), &["kb", "remove", "docs"], None);
    assert_ne!(code, 0);
    assert!(err.contains("bundled guides"));
    assert_eq!(cli(s.data.path(), &["kb", "remove", "home"], None).0, 0);
    let (code, _, err) = cli(s.data.path(), &["kb", "remove", "home"], None);
    assert_ne!(code, 0);
    assert!(err.contains("no collection named home"), "{err}");
    let a = ask(&s, &key, "When should I water the tomatoes?");
    assert!(!a["response"].as_str().unwrap().contains("before nine"), "{a}");
}

#[test]
fn kb_names_put_passages_into_an_llm_prompt_and_report_them() {
    use crate::fake_llm::{FakeLlm, Script};
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","provider","config"]}"#);
    let docs = s.data.path().join("faq.md");
    std::fs::write(&docs, "# FAQ\n\n## Opening hours\n\nThe shop opens at 8 and closes at 18.\n").unwrap();
    assert_eq!(cli(s.data.path(), &["kb", "add", "--collection", "faq", docs.to_str().unwrap()], None).0, 0);
    let fake = FakeLlm::start(Script::reply(&["It opens at 8."]));
    crate::fake_llm::connect(&s, &key, &fake, "openai_chat_completion", &["k"], json!({}));
    s.expect(&s.call("PUT", "/api/v1/system-config", &key, Some(json!({"kb_names": ["faq"]}))), 200);

    let a = ask(&s, &key, "What are the opening hours of the shop?");
    assert_eq!(a["response"], "It opens at 8.");
    assert_eq!(a["sources"][0]["url"], "kb:faq/faq.md#opening-hours");
    let system = fake.last().messages()[0]["content"].as_str().unwrap().to_owned();
    assert!(system.contains("The shop opens at 8 and closes at 18."), "{system}");
}

/// A website bot (a profile listing its own collection in `kb_names`) answers from that
/// collection only, with sources linking to the site's pages (`kb add --base-url`); the
/// default profile still answers from everything.
#[test]
fn a_bots_own_collection_answers_with_the_sites_links() {
    let s = Server::start();
    let admin = s.admin_token();
    let docs = s.data.path().join("site");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("hours.md"), "# Opening hours\n\nWe are open Monday to Friday, 9 to 5.\n")
        .unwrap();
    let (code, _, err) = cli(
        s.data.path(),
        &["kb", "add", "--collection", "shop", "--base-url", "https://shop.example/", docs.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        cli(s.data.path(), &["kb", "add", "--collection", "x", "--base-url", "ftp://a", "y.md"], None);
    assert_ne!(code, 0);
    assert!(err.contains("--base-url must be an http or https URL"), "{err}");
    let body = json!({"name": "shop-bot", "config": {"kb_names": ["shop"]}});
    let r = s.call("POST", "/api/v1/config-profiles", &admin, Some(body));
    s.expect(&r, 200);
    let (key, _) = s.create_key(&admin, r#"{"scopes":["chat"],"bot_id":"shop-bot"}"#);
    let auth = format!("Bearer {key}");
    let ask = |q: &str| {
        let body = json!({"bot_id": "shop-bot", "message": q}).to_string();
        let r = s.request("POST", "/api/v1/chat", &[("Authorization", &auth)], Some(&body));
        s.expect(&r, 200);
        r.json()
    };
    let a = ask("What are your opening hours?");
    assert_eq!(a["response"], "We are open Monday to Friday, 9 to 5.", "{a}");
    assert_eq!(a["sources"], json!([{"title": "Opening hours", "url": "https://shop.example/hours"}]));
    // The bundled guides are not this bot's knowledge.
    let a = ask("How do I create an API key?");
    assert_eq!(a["sources"], json!([]), "{a}");
    let a = ask_default(&s, &admin, "How do I create an API key?");
    assert!(a["sources"][0]["url"].as_str().unwrap().starts_with("/docs/"), "{a}");
}

fn ask_default(s: &Server, token: &str, question: &str) -> Value {
    let auth = format!("Bearer {token}");
    let body = json!({"bot_id": "default", "message": question}).to_string();
    let r = s.request("POST", "/api/v1/chat", &[("Authorization", &auth)], Some(&body));
    s.expect(&r, 200);
    r.json()
}

#[test]
fn the_bundled_guides_are_indexed_once_and_searched_after_a_restart() {
    let s = Server::start();
    let built = || s.log().lines().any(|l| l.ends_with("passages from the bundled docs"));
    assert!(crate::support::eventually(5, built), "{}", s.log());
    let data = s.data.clone();
    s.terminate();
    let again = Server::start_with(data, &[]);
    assert!(
        crate::support::eventually(5, || again.log().contains("passages from the bundled docs (unchanged)")),
        "{}",
        again.log()
    );
    let a = ask(&again, &again.admin_token(), "How do I create an API key?");
    assert!(a["sources"][0]["url"].as_str().unwrap().starts_with("/docs/"), "{a}");
}
