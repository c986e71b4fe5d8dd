//! The Telegram adapter against the fake Bot API (`fake_telegram`) and a fake LLM: a bot is
//! created over the bots API pointing at the fake, messages are pushed as updates, and the
//! replies are read from what the fake received. Covers receiving (private, group waking,
//! topics, photos), sending (long texts, images, topics), the Bot API's errors (429, 409
//! webhook, a refused token, an outage), stopping, and that the token never shows.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script, connect};
use crate::fake_telegram::{BOT_ID, BOT_NAME, Call, FakeTelegram, Scripted, TOKEN};
use crate::support::{PNG, Server, eventually, http, upload_file};

const SCOPES: &str = r#"{"scopes":["bot","im","provider","file","chat","config"]}"#;
const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    s: Server,
    key: String,
    tg: FakeTelegram,
    llm: FakeLlm,
}

/// A server with a fake LLM answering `reply`, and a bot `tg` on a fake Bot API, running.
fn setup(reply: &str) -> Setup {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), SCOPES);
    let llm = FakeLlm::start(Script::reply(&[reply]));
    connect(&s, &key, &llm, "openai_chat_completion", &["sk-test-1"], json!({}));
    let tg = FakeTelegram::start();
    s.check("POST", "/api/v1/bots", &key, Some(bot(&tg, TOKEN)), 200, json!({"status": "ok"}));
    let setup = Setup { s, key, tg, llm };
    setup.wait_status("running");
    setup
}

fn bot(tg: &FakeTelegram, token: &str) -> Value {
    json!({"id": "tg", "type": "telegram", "telegram_token": token, "telegram_api_base_url": tg.api_base(),
           "telegram_file_base_url": tg.file_base(), "telegram_poll_timeout": 1,
           "start_message": "Welcome aboard!"})
}

impl Setup {
    fn state(&self) -> Value {
        let r = self.s.call("GET", "/api/v1/bots", &self.key, None);
        self.s.expect(&r, 200);
        r.json()["data"]["bots"][0]["state"].clone()
    }

    fn wait_status(&self, status: &str) {
        assert!(
            eventually(20, || self.state()["status"] == status),
            "bot state {} (wanted {status})\n{}",
            self.state(),
            self.s.log()
        );
    }

    /// The texts the model was asked, latest last.
    fn prompts(&self) -> Vec<String> {
        self.llm
            .requests()
            .iter()
            .map(|r| match &r.messages().last().unwrap()["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => {
                    parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" ")
                }
                other => other.to_string(),
            })
            .collect()
    }
}

fn private(user: i64, message_id: i64, text: &str) -> Value {
    json!({"message_id": message_id, "date": 1_735_689_600, "chat": {"id": user, "type": "private"},
           "from": {"id": user, "is_bot": false, "first_name": "Ann", "username": "ann"}, "text": text})
}

fn group(chat: i64, message_id: i64, text: &str, entities: Value) -> Value {
    json!({"message_id": message_id, "date": 1_735_689_600, "chat": {"id": chat, "type": "supergroup", "title": "G"},
           "from": {"id": 5151, "is_bot": false, "first_name": "Bob"}, "text": text, "entities": entities})
}

fn texts(sent: &[Call]) -> Vec<String> {
    sent.iter().map(|c| c.text().to_owned()).collect()
}

#[test]
fn a_private_message_is_answered_in_its_chat_and_start_gets_the_start_message() {
    let t = setup("Hello from the model.");
    let id = t.tg.push(private(4242, 1, "hi there"));
    let sent = t.tg.wait_sent(1, WAIT);
    assert!(sent[0].is("sendMessage"));
    assert_eq!((sent[0].chat(), sent[0].text()), ("4242".to_owned(), "Hello from the model."));
    assert!(sent[0].params.get("parse_mode").is_none(), "plain text");
    assert_eq!(t.prompts(), ["hi there"]);
    let actions = t.tg.calls_of("sendChatAction");
    assert_eq!(actions[0].params["action"], "typing");

    // The bootstrap and the polling as the reference says.
    let calls = t.tg.calls();
    assert!(calls[0].is("getMe") && calls[1].is("deleteWebhook"), "{:?}", &calls[..2]);
    let polls = t.tg.calls_of("getUpdates");
    assert_eq!(
        (polls[0].params["timeout"].clone(), polls[0].params["allowed_updates"].clone()),
        (json!(1), json!(["message"]))
    );
    assert!(
        t.tg.wait_for(WAIT, |c| c.iter().any(|c| c.is("getUpdates") && c.params["offset"] == json!(id + 1))),
        "the offset confirms the update"
    );
    assert_eq!(t.tg.pending(), 0);

    // `/start` is answered by the adapter, never by the model.
    t.tg.push(private(4242, 2, "/start"));
    let sent = t.tg.wait_sent(2, WAIT);
    assert_eq!(sent[1].text(), "Welcome aboard!");
    assert_eq!(t.llm.requests().len(), 1);

    // Updates without a message or a sender are skipped; the bot goes on.
    t.tg.push_update(json!({"edited_message": private(4242, 3, "edited")}));
    t.tg.push(json!({"message_id": 4, "chat": {"id": -1001, "type": "channel"}, "text": "post"}));
    t.tg.push(private(4242, 5, "again"));
    let sent = t.tg.wait_sent(3, WAIT);
    assert_eq!(t.prompts(), ["hi there", "again"], "{:?}", texts(&sent));
}

#[test]
fn a_group_message_is_answered_only_when_the_bot_is_woken() {
    let t = setup("Sure.");
    let chat = -100_123;
    t.tg.push(group(chat, 10, "just chatting", json!([])));
    // "😀 " is 3 UTF-16 units: the mention starts at unit 3.
    t.tg.push(group(
        chat,
        11,
        "😀 @Astr_Test_Bot what is up",
        json!([{"type": "mention", "offset": 3, "length": 14}]),
    ));
    let sent = t.tg.wait_sent(1, WAIT);
    assert_eq!((sent[0].chat(), sent[0].text()), (chat.to_string(), "Sure."));
    assert_eq!(t.prompts(), ["😀 what is up"], "only the addressed message reached the model");

    // A reply to one of the bot's messages wakes it.
    let mut reply = group(chat, 12, "and then?", json!([]));
    reply["reply_to_message"] = json!({"message_id": 1, "chat": {"id": chat, "type": "supergroup"},
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Test", "username": BOT_NAME}, "text": "Sure."});
    t.tg.push(reply);
    t.tg.wait_sent(2, WAIT);
    assert_eq!(t.prompts().last().unwrap(), "and then?");

    // The wake prefix wakes it, and a command addressed to it is a command.
    t.tg.push(group(chat, 13, "/ tell me more", json!([])));
    t.tg.wait_sent(3, WAIT);
    assert_eq!(t.prompts().last().unwrap(), "tell me more");
    t.tg.push(group(
        chat,
        14,
        "/sid@astr_test_bot",
        json!([{"type": "bot_command", "offset": 0, "length": 18}]),
    ));
    let sent = t.tg.wait_sent(4, WAIT);
    assert!(sent[3].text().contains("UMO: tg:GroupMessage:-100123"), "{}", sent[3].text());

    // A command for another bot and a message for someone else do not wake it; a topic
    // message is answered in its topic.
    t.tg.push(group(
        chat,
        15,
        "/help@other_bot",
        json!([{"type": "bot_command", "offset": 0, "length": 15}]),
    ));
    t.tg.push(group(chat, 16, "@ann /help", json!([{"type": "mention", "offset": 0, "length": 4}])));
    let mut topic = group(
        chat,
        17,
        "@astr_test_bot in the topic",
        json!([{"type": "mention", "offset": 0, "length": 14}]),
    );
    topic["message_thread_id"] = json!(7);
    topic["is_topic_message"] = json!(true);
    t.tg.push(topic);
    let sent = t.tg.wait_sent(5, WAIT);
    assert_eq!(sent[4].params["message_thread_id"], 7);
    assert_eq!(t.prompts().last().unwrap(), "in the topic");
    assert_eq!(t.llm.requests().len(), 4, "{:?}", t.prompts());
}

#[test]
fn a_received_photo_reaches_the_model_and_an_image_goes_out_as_a_photo_upload() {
    let t = setup("A pixel.");
    t.tg.add_file("big-photo", "photos/file_1.png", PNG);
    let mut photo = private(4242, 1, "");
    photo.as_object_mut().unwrap().remove("text");
    photo["photo"] = json!([{"file_id": "small-photo", "width": 1, "height": 1},
                            {"file_id": "big-photo", "width": 1, "height": 1, "file_size": PNG.len()}]);
    photo["caption"] = json!("what is this?");
    t.tg.push(photo);
    let sent = t.tg.wait_sent(1, WAIT);
    assert_eq!(sent[0].text(), "A pixel.");
    assert_eq!(t.tg.calls_of("getFile")[0].params["file_id"], "big-photo", "the largest size");
    assert_eq!(t.tg.downloads(), ["photos/file_1.png"]);
    let content = t.llm.last().messages().last().unwrap()["content"].clone();
    assert_eq!(content[0], json!({"type": "text", "text": "what is this?"}), "{content}");
    assert_eq!(content[1]["type"], "image_url", "{content}");

    // A failed download: logged, and the caption still goes on.
    let mut lost = private(4242, 2, "");
    lost.as_object_mut().unwrap().remove("text");
    lost["document"] = json!({"file_id": "unknown-file", "file_name": "a.pdf"});
    lost["caption"] = json!("read this");
    t.tg.push(lost);
    t.tg.wait_sent(2, WAIT);
    assert_eq!(t.prompts().last().unwrap(), "read this");
    assert!(t.s.log().contains("cannot fetch a received file"), "{}", t.s.log());

    // An image out: a multipart sendPhoto with the bytes.
    let id = upload_file(&t.s, &t.key, "pixel.png", Some("image/png"), PNG);
    let body = json!({"umo": "tg:FriendMessage:4242", "message": [
        {"type": "plain", "text": "look"}, {"type": "image", "attachment_id": id}]});
    t.s.check("POST", "/api/v1/im/message", &t.key, Some(body), 200, json!({"status": "ok"}));
    let sent = t.tg.wait_sent(4, WAIT);
    assert_eq!(sent[2].text(), "look");
    let photo = &sent[3];
    assert!(photo.is("sendPhoto"), "{photo:?}");
    assert_eq!(photo.chat(), "4242");
    assert_eq!(photo.files.len(), 1);
    assert_eq!((photo.files[0].field.as_str(), photo.files[0].data.as_slice()), ("photo", PNG));
    assert_eq!(
        (photo.files[0].filename.as_str(), photo.files[0].content_type.as_str()),
        ("pixel.png", "image/png")
    );
    let actions = t.tg.calls_of("sendChatAction");
    assert_eq!(actions.last().unwrap().params["action"], "upload_photo");
}

#[test]
fn flood_control_and_a_webhook_are_waited_out() {
    let t = setup("Fine.");
    t.tg.script("sendMessage", Scripted::retry_after(1));
    t.tg.push(private(4242, 1, "hello"));
    let sent = t.tg.wait_sent(1, WAIT);
    let tries = t.tg.calls_of("sendMessage");
    assert_eq!(tries.len(), 2, "one refusal, one retry");
    assert!(!tries[0].ok && tries[1].ok);
    let waited = tries[1].at.duration_since(tries[0].at);
    assert!(waited >= Duration::from_millis(1400), "retry_after 1 + 0.5 s, waited {waited:?}");
    assert_eq!(sent[0].text(), "Fine.");

    // A webhook set meanwhile: deleted, and polling goes on.
    let deletes = t.tg.calls_of("deleteWebhook").len();
    t.tg.set_webhook();
    assert!(t.tg.wait_for(WAIT, |c| c.iter().filter(|c| c.is("deleteWebhook")).count() > deletes));
    t.tg.push(private(4242, 2, "still there?"));
    t.tg.wait_sent(2, WAIT);
    let conflicts = t.tg.calls_of("getUpdates").iter().filter(|c| !c.ok).count();
    assert!(conflicts >= 1);

    // Another program polling with the token: shown in the state, and polling goes on.
    let other =
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
    t.tg.script("getUpdates", Scripted::error(409, other));
    t.wait_status("error");
    assert!(t.state()["error"].as_str().unwrap().starts_with("another program is polling"), "{}", t.state());
    t.wait_status("running");

    // Flood control on the poll itself.
    t.tg.script("getUpdates", Scripted::retry_after(1));
    t.tg.push(private(4242, 3, "and now?"));
    t.tg.wait_sent(3, WAIT);
    t.wait_status("running");
}

#[test]
fn a_refused_token_stops_the_bot_with_a_clear_error_and_never_shows_the_token() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), SCOPES);
    let tg = FakeTelegram::start();
    let wrong = "999999:WRONGsecretTOKENvalue";
    s.check("POST", "/api/v1/bots", &key, Some(bot(&tg, wrong)), 200, json!({"status": "ok"}));
    let t = Setup { s, key, tg, llm: FakeLlm::start(Script::reply(&["-"])) };
    t.wait_status("error");
    let state = t.state();
    assert_eq!(state["error"], "Telegram refused the token (401 Unauthorized)", "{state}");
    let test = t.s.call("POST", "/api/v1/bots/tg/test", &t.key, None);
    t.s.expect(&test, 200);
    assert_eq!(test.json()["data"]["status"], "error");
    assert_eq!(test.json()["data"]["message"], "Telegram refused the token (401 Unauthorized)");
    // Stopped for good: getMe (and the test's) only, no polling after the refusal.
    let calls = t.tg.calls();
    assert!(!calls.is_empty() && calls.iter().all(|c| c.is("getMe") && !c.ok), "{calls:#?}");
    assert!(t.s.log().contains("refused the token"), "{}", t.s.log());
    let listing = t.s.call("GET", "/api/v1/bots", &t.key, None).text();
    for text in [&listing, &test.text(), &t.s.log()] {
        assert!(!text.contains("WRONGsecretTOKENvalue"), "the token shows: {text}");
    }

    // A good token: the test route reports the bot's account.
    let t = setup("-");
    let test = t.s.call("POST", "/api/v1/bots/tg/test", &t.key, None).json();
    assert_eq!(test["data"]["status"], "ok", "{test}");
    assert_eq!(test["data"]["username"], BOT_NAME);
    assert_eq!(test["data"]["bot_user_id"], BOT_ID);
    assert_eq!(test["data"]["message"], format!("connected as @{BOT_NAME}"));
    assert!(t.s.log().contains(&format!("connected to Telegram as @{BOT_NAME}")));
    assert!(!t.s.log().contains(TOKEN.split_once(':').unwrap().1));
}

#[test]
fn disabling_the_bot_stops_polling_at_once_and_a_restart_resumes_where_it_stopped() {
    let t = setup("-");
    t.tg.push(private(4242, 1, "first"));
    t.tg.wait_sent(1, WAIT);
    let r = t.s.call("PATCH", "/api/v1/bots/tg/enabled", &t.key, Some(json!({"enabled": false})));
    t.s.expect(&r, 200);
    let stopped = Instant::now();
    assert_eq!(t.state()["status"], "stopped");
    let late = |c: &[Call]| c.iter().any(|c| c.is("getUpdates") && c.at > stopped);
    assert!(!t.tg.wait_for(Duration::from_secs(2), late), "{:#?}", t.tg.calls_of("getUpdates"));
    // A message pushed now waits for the next start, which does not answer the first
    // one again (its offset was confirmed when the bot stopped).
    t.tg.push(private(4242, 2, "anyone?"));
    let r = t.s.call("PATCH", "/api/v1/bots/tg/enabled", &t.key, Some(json!({"enabled": true})));
    t.s.expect(&r, 200);
    t.tg.wait_sent(2, WAIT);
    t.wait_status("running");
    assert_eq!(t.prompts(), ["first", "anyone?"]);
}

#[test]
fn the_fake_reads_every_parameter_encoding() {
    let tg = FakeTelegram::start();
    let path = |query: &str| format!("/bot{TOKEN}/sendMessage{query}");
    let ok = |r: crate::support::Resp| assert_eq!(r.status, 200, "{}", r.text());
    ok(http(tg.addr, "POST", &path("?chat_id=-5&text=a%20b+c"), &[], None));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let reply = r#"reply_parameters=%7B%22message_id%22%3A3%7D"#;
    ok(http(tg.addr, "POST", &path(""), &form, Some(format!("chat_id=7&text=hi&{reply}").as_bytes())));
    let json = [("Content-Type", "application/json")];
    ok(http(tg.addr, "POST", &path(""), &json, Some(br#"{"chat_id":"@chan","text":"j"}"#)));
    let sent = tg.sent();
    assert_eq!((sent[0].chat(), sent[0].text()), ("-5".to_owned(), "a b c"));
    assert_eq!(sent[1].params["reply_parameters"], json!({"message_id": 3}));
    assert_eq!(sent[2].chat(), "@chan");
    let r = http(
        tg.addr,
        "POST",
        &path(""),
        &json,
        Some(format!(r#"{{"chat_id":1,"text":"{}"}}"#, "x".repeat(4097)).as_bytes()),
    );
    assert_eq!((r.status, r.json()["description"].clone()), (400, json!("Bad Request: message is too long")));
    let r = http(tg.addr, "GET", "/bot1:wrong/getMe", &[], None);
    assert_eq!((r.status, r.json()["description"].clone()), (401, json!("Unauthorized")));
    let r = http(tg.addr, "GET", &format!("/bot{TOKEN}/noSuchMethod"), &[], None);
    assert_eq!((r.status, r.json()["description"].clone()), (404, json!("Not Found: method not found")));
}

#[test]
fn proactive_messages_reach_topics_and_long_replies_are_split() {
    let long = ["a".repeat(3000), "b".repeat(3000), "c".repeat(3000)].join("\n\n");
    let t = setup(&long);
    let body = json!({"umo": "tg:GroupMessage:-100123#7", "message": "to the topic"});
    t.s.check("POST", "/api/v1/im/message", &t.key, Some(body), 200, json!({"status": "ok"}));
    let sent = t.tg.wait_sent(1, WAIT);
    assert_eq!(sent[0].params["chat_id"], -100_123);
    assert_eq!(sent[0].params["message_thread_id"], 7);
    assert_eq!(sent[0].text(), "to the topic");
    let bad = json!({"umo": "tg:FriendMessage:not-a-chat", "message": "x"});
    let r = t.s.call("POST", "/api/v1/im/message", &t.key, Some(bad));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("invalid Telegram chat"), "{}", r.text());

    t.tg.push(private(4242, 1, "write a lot"));
    let sent = t.tg.wait_sent(4, WAIT);
    let parts: Vec<&Call> = sent[1..].iter().collect();
    for (p, letter) in parts.iter().zip(["a", "b", "c"]) {
        assert_eq!(p.text(), letter.repeat(3000), "cut at the paragraph breaks");
        assert!(p.text().encode_utf16().count() <= 4096);
    }
    // One chat, one message a second.
    assert!(parts[2].at.duration_since(parts[0].at) >= Duration::from_millis(1900));
}

#[test]
fn the_bot_answers_again_after_the_bot_api_went_away_for_a_while() {
    let t = setup("Back.");
    t.tg.push(private(4242, 1, "before"));
    t.tg.wait_sent(1, WAIT);
    t.tg.go_away();
    let unreachable = || t.state()["error"].as_str().unwrap_or_default().contains("cannot reach Telegram");
    assert!(eventually(20, unreachable), "{}\n{}", t.state(), t.s.log());
    // Nothing gets through while the port is closed.
    let seen = t.tg.calls().len();
    assert!(!t.tg.wait_for(Duration::from_secs(3), |c| c.len() > seen));
    t.tg.come_back();
    t.tg.push(private(4242, 2, "after"));
    let sent = t.tg.wait_sent(2, Duration::from_secs(40));
    assert_eq!(sent[1].text(), "Back.");
    t.wait_status("running");
    assert!(!t.s.log().contains(TOKEN.split_once(':').unwrap().1), "{}", t.s.log());
}

#[test]
fn refused_voice_goes_as_a_document_and_a_dropped_poll_is_retried() {
    let t = setup("-");
    t.tg.script("sendVoice", Scripted::error(400, "Bad Request: VOICE_MESSAGES_FORBIDDEN"));
    let id = upload_file(&t.s, &t.key, "note.ogg", Some("audio/ogg"), b"OggS-voice");
    let body = json!({"umo": "tg:FriendMessage:4242", "message": [{"type": "record", "attachment_id": id}]});
    t.s.check("POST", "/api/v1/im/message", &t.key, Some(body), 200, json!({"status": "ok"}));
    let sent = t.tg.wait_sent(1, WAIT);
    assert!(sent[0].is("sendDocument"), "{sent:?}");
    assert_eq!(sent[0].files[0].data, b"OggS-voice");
    assert_eq!(t.tg.calls_of("sendVoice").len(), 1);
    assert_eq!(t.tg.calls_of("sendChatAction")[0].params["action"], "upload_voice");

    // Other refusals are the route's error, with Telegram's description.
    t.tg.script("sendMessage", Scripted::error(403, "Forbidden: bot was blocked by the user"));
    let r = t.s.call(
        "POST",
        "/api/v1/im/message",
        &t.key,
        Some(json!({"umo": "tg:FriendMessage:4242", "message": "x"})),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("Failed to send message: Forbidden: bot was blocked by the user"),
        "{}",
        r.text()
    );

    // A poll whose connection is closed unanswered: retried, and the message still comes.
    t.tg.script("getUpdates", Scripted::Close);
    t.tg.push(private(4242, 1, "hello?"));
    t.tg.wait_sent(2, WAIT);
    assert!(t.tg.calls_of("getUpdates").iter().any(|c| !c.ok));
}
