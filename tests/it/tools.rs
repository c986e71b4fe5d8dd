//! The agent's tool loop through `POST /api/v1/chat` against the fake model (`fake_llm`
//! with scripted tool calls): the `tool_call` / `tool_call_result` events in AstrBot's
//! shape and order, the results fed back in the OpenAI and Anthropic formats, parallel
//! calls, errors reported to the model, the step limit, the built-in tools, and the
//! persona's tool filter.

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Recorded, Script, Step, connect};
use crate::support::{Server, cli, eventually, upload_file};

const ALL_SCOPES: &str = r#"{"scopes":["chat","provider","persona","config","file"]}"#;
const BUILTINS: [&str; 3] = ["current_time", "knowledge_search", "read_attachment"];
const LIMIT_PROMPT: &str = "Maximum tool call limit reached. Stop calling tools, and based on the information you have gathered, summarize your task and findings, and reply to the user directly.";

/// A server connected to a fake model of `kind` that answers `steps` in order, then "done".
fn with_fake(kind: &str, steps: Vec<Step>) -> (Server, String, FakeLlm) {
    let s = Server::start();
    let (k, _) = s.create_key(&s.admin_token(), ALL_SCOPES);
    let fake = FakeLlm::start(Script::reply(&["done"]));
    fake.set(|sc| sc.steps = steps.into());
    connect(&s, &k, &fake, kind, &["sk-test-1"], json!({}));
    (s, k, fake)
}

fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad event ({e}): {d}")))
        .collect()
}

fn chat(s: &Server, key: &str, body: Value) -> Vec<Value> {
    let r = s.call("POST", "/api/v1/chat", key, Some(body));
    s.expect(&r, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")), "{}", r.text());
    events(&r.text())
}

/// `type`, or `type:chain_type` for tool events.
fn kinds(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .map(|e| match e["chain_type"].as_str() {
            Some(chain) => format!("{}:{chain}", e["type"].as_str().unwrap_or("?")),
            None => e["type"].as_str().unwrap_or("?").to_owned(),
        })
        .collect()
}

/// The tool events' payloads (`data` parsed), with the raw `data` strings.
fn tool_events(ev: &[Value], chain: &str) -> Vec<(Value, String)> {
    ev.iter()
        .filter(|e| e["chain_type"] == chain)
        .map(|e| {
            assert_eq!(e["type"], "plain", "{e}");
            assert_eq!(e["streaming"], false, "{e}");
            assert_eq!(e["message_id"], ev[2]["data"]["run_id"], "{e}");
            let raw = e["data"].as_str().unwrap_or_else(|| panic!("data is not a string: {e}")).to_owned();
            (serde_json::from_str(&raw).unwrap_or_else(|e| panic!("data is not JSON ({e}): {raw}")), raw)
        })
        .collect()
}

fn complete(ev: &[Value]) -> String {
    ev.iter()
        .find(|e| e["type"] == "complete")
        .and_then(|e| e["data"].as_str())
        .expect("no complete")
        .to_owned()
}

fn tool_names(req: &Recorded, anthropic: bool) -> Vec<String> {
    req.body["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools offered: {}", req.body))
        .iter()
        .map(|t| {
            let name = if anthropic { &t["name"] } else { &t["function"]["name"] };
            name.as_str().unwrap().to_owned()
        })
        .collect()
}

fn bot_messages(s: &Server, k: &str, session: &str) -> Vec<Value> {
    let r = s.call("GET", &format!("/api/v1/chat/sessions/{session}?username=alice"), k, None);
    s.expect(&r, 200);
    r.json()["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["sender"] == "bot")
        .cloned()
        .collect()
}

fn set_provider_settings(s: &Server, k: &str, change: impl FnOnce(&mut Value)) {
    let got = s.call("GET", "/api/v1/system-config", k, None);
    s.expect(&got, 200);
    let mut settings = got.json()["data"]["config"]["provider_settings"].clone();
    change(&mut settings);
    s.expect(&s.call("PUT", "/api/v1/system-config", k, Some(json!({"provider_settings": settings}))), 200);
}

fn use_persona(s: &Server, k: &str, id: &str, tools: Value) {
    let body = json!({"persona_id": id, "system_prompt": "You help.", "begin_dialogs": [], "tools": tools});
    s.expect(&s.call("POST", "/api/v1/personas", k, Some(body)), 200);
    set_provider_settings(s, k, |p| p["default_personality"] = json!(id));
}

#[test]
fn an_openai_model_calls_current_time_and_answers() {
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![Step::calls("", &[("call_1", "current_time", "{}")]), Step::text(&["It is ", "noon."])],
    );
    let ev = chat(&s, &k, json!({"username": "alice", "session_id": "t-1", "message": "what time is it?"}));
    assert_eq!(
        kinds(&ev),
        [
            "session_id",
            "user_message_saved",
            "run_started",
            "agent_stats",
            "plain:tool_call",
            "plain:tool_call_result",
            "plain",
            "plain",
            "agent_stats",
            "complete",
            "message_saved",
            "end"
        ]
    );
    let calls = tool_events(&ev, "tool_call");
    let (call, raw) = &calls[0];
    assert!(raw.starts_with(r#"{"id": "call_1", "name": "current_time", "args": {}, "ts": "#), "{raw}");
    assert!(call["ts"].as_f64().unwrap() > 1.7e9, "{raw}");
    let results = tool_events(&ev, "tool_call_result");
    let (result, raw) = &results[0];
    assert!(raw.starts_with(r#"{"id": "call_1", "ts": "#), "{raw}");
    assert_eq!(result.as_object().unwrap().keys().collect::<Vec<_>>(), ["id", "ts", "result"]);
    let time = result["result"].as_str().unwrap().to_owned();
    assert!(time.contains("T") && time.ends_with("(Asia/Shanghai)"), "{time}");
    assert!(result["ts"].as_f64().unwrap() >= call["ts"].as_f64().unwrap());
    assert_eq!(complete(&ev), "It is noon.");
    assert_eq!(ev[8]["data"]["token_usage"], json!({"input_other": 22, "input_cached": 0, "output": 14}));
    assert_eq!(ev[3]["data"]["token_usage"], json!({"input_other": 11, "input_cached": 0, "output": 7}));

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(tool_names(&reqs[0], false), BUILTINS);
    assert_eq!(reqs[0].body["tool_choice"], "auto");
    assert_eq!(reqs[0].body["tools"][0]["type"], "function");
    assert_eq!(reqs[0].body["tools"][1]["function"]["parameters"]["required"], json!(["query"]));
    let msgs = reqs[1].messages();
    let n = msgs.len();
    assert_eq!(msgs[n - 3], json!({"role": "user", "content": "what time is it?"}));
    assert_eq!(
        msgs[n - 2],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}}]})
    );
    assert_eq!(msgs[n - 1], json!({"role": "tool", "tool_call_id": "call_1", "content": time}));

    // Stored: the call with its result, then the final text; the log has the call.
    let bot = bot_messages(&s, &k, "t-1");
    let parts = &bot[0]["content"]["message"];
    assert_eq!(parts[0]["type"], "tool_call", "{parts}");
    assert_eq!(parts[0]["tool_calls"][0]["name"], "current_time");
    assert_eq!(parts[0]["tool_calls"][0]["result"], time.as_str());
    assert_eq!(parts[1], json!({"type": "plain", "text": "It is noon."}));
    assert!(
        eventually(5, || s.log().contains(": tool current_time ") && s.log().contains(" ms ok")),
        "{}",
        s.log()
    );

    // The next chat's history carries the answer, not the tool exchange.
    chat(&s, &k, json!({"username": "alice", "session_id": "t-1", "message": "thanks"}));
    let msgs = fake.last().messages();
    assert!(msgs.iter().any(|m| m == &json!({"role": "assistant", "content": "It is noon."})), "{msgs:?}");
    assert!(msgs.iter().all(|m| m["role"] != "tool"), "{msgs:?}");
}

#[test]
fn an_anthropic_model_calls_a_tool_and_gets_the_result_back() {
    let (s, k, fake) = with_fake(
        "anthropic_chat_completion",
        vec![
            Step::calls("Let me check.", &[("toolu_01", "current_time", r#"{"zone": "here"}"#)]),
            Step::text(&["Noon", "."]),
        ],
    );
    let ev = chat(&s, &k, json!({"username": "alice", "message": "time?"}));
    let k_ = kinds(&ev);
    let first_call = k_.iter().position(|x| x == "plain:tool_call").expect("no tool_call");
    assert_eq!(k_[first_call - 2..first_call], ["plain", "agent_stats"], "preamble text, then stats: {k_:?}");
    assert_eq!(k_[first_call + 1], "plain:tool_call_result");
    let (call, _) = &tool_events(&ev, "tool_call")[0];
    assert_eq!(call["args"], json!({"zone": "here"}), "streamed partial_json assembled");
    assert_eq!(call["id"], "toolu_01");
    let (result, _) = &tool_events(&ev, "tool_call_result")[0];
    assert_eq!(complete(&ev), "Noon.", "the reply is the final answer");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(tool_names(&reqs[0], true), BUILTINS);
    assert_eq!(reqs[0].body["tools"][1]["input_schema"]["type"], "object");
    assert!(reqs[0].body.get("tool_choice").is_none(), "{}", reqs[0].body);
    let msgs = reqs[1].messages();
    let n = msgs.len();
    assert_eq!(
        msgs[n - 2],
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01", "name": "current_time", "input": {"zone": "here"}}]})
    );
    assert_eq!(
        msgs[n - 1],
        json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": result["result"]}]})
    );
}

#[test]
fn parallel_calls_run_in_order_and_are_all_answered() {
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![
            Step::calls(
                "",
                &[("call_A", "current_time", "{}"), ("call_B", "knowledge_search", r#"{"query": "x"}"#)],
            ),
            Step::text(&["Both."]),
        ],
    );
    let ev = chat(&s, &k, json!({"username": "alice", "message": "two things"}));
    let tools: Vec<String> = kinds(&ev).into_iter().filter(|x| x.contains(":tool")).collect();
    assert_eq!(
        tools,
        ["plain:tool_call", "plain:tool_call_result", "plain:tool_call", "plain:tool_call_result"]
    );
    let ids: Vec<Value> =
        tool_events(&ev, "tool_call_result").into_iter().map(|(v, _)| v["id"].clone()).collect();
    assert_eq!(ids, ["call_A", "call_B"]);
    let msgs = fake.last().messages();
    let n = msgs.len();
    assert_eq!(msgs[n - 3]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        (msgs[n - 2]["tool_call_id"].as_str(), msgs[n - 1]["tool_call_id"].as_str()),
        (Some("call_A"), Some("call_B"))
    );
    assert_eq!(complete(&ev), "Both.");
}

#[test]
fn tool_errors_are_reported_to_the_model_not_the_client() {
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![
            Step::calls(
                "",
                &[
                    ("c1", "nope", "{}"),
                    ("c2", "knowledge_search", r#"{"query": "#),
                    ("c3", "knowledge_search", "{}"),
                ],
            ),
            Step::text(&["Sorry."]),
        ],
    );
    let ev = chat(&s, &k, json!({"username": "alice", "message": "break things"}));
    let results: Vec<String> = tool_events(&ev, "tool_call_result")
        .into_iter()
        .map(|(v, _)| v["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        results[0],
        "error: Tool nope not found. Available tools are: current_time, knowledge_search, read_attachment"
    );
    assert!(results[1].starts_with("error: the arguments are not valid JSON ("), "{}", results[1]);
    assert_eq!(results[2], "error: knowledge_search needs a non-empty `query` string");
    let (bad, _) = &tool_events(&ev, "tool_call")[1];
    assert_eq!(bad["args"], r#"{"query": "#, "unparsable arguments are shown as the model wrote them");
    let msgs = fake.last().messages();
    let asked: Vec<&Value> =
        msgs.iter().flat_map(|m| m["tool_calls"].as_array().into_iter().flatten()).collect();
    assert_eq!(asked[1]["function"]["arguments"], "{}", "garbled arguments go back as {{}}");
    assert_eq!(asked[2]["function"]["arguments"], "{}");
    let fed: Vec<&str> =
        msgs.iter().filter(|m| m["role"] == "tool").map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(fed, results.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(complete(&ev), "Sorry.");
    let logged = |l: String| l.lines().any(|l| l.contains(": tool nope ") && l.ends_with(" ms error"));
    assert!(eventually(5, || logged(s.log())), "{}", s.log());
}

#[test]
fn the_step_limit_ends_with_one_request_without_tools() {
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![
            Step::calls("", &[("c1", "current_time", "{}")]),
            Step::calls("", &[("c2", "current_time", "{}")]),
            Step::calls("", &[("c3", "current_time", "{}")]),
        ],
    );
    set_provider_settings(&s, &k, |p| p["max_agent_step"] = json!(2));
    let ev = chat(&s, &k, json!({"username": "alice", "message": "loop forever"}));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3, "two steps with tools, then the final request");
    assert!(reqs[0].body.get("tools").is_some() && reqs[1].body.get("tools").is_some());
    assert!(reqs[2].body.get("tools").is_none(), "{}", reqs[2].body);
    assert!(reqs[2].body.get("tool_choice").is_none(), "{}", reqs[2].body);
    assert_eq!(reqs[2].messages().last().unwrap(), &json!({"role": "user", "content": LIMIT_PROMPT}));
    assert_eq!(tool_events(&ev, "tool_call").len(), 2, "calls in the final answer are not run");
    let stats: Vec<&Value> = ev.iter().filter(|e| e["type"] == "agent_stats").collect();
    assert_eq!(stats.last().unwrap()["data"]["token_usage"]["output"], 21, "summed over three requests");
}

#[test]
fn anthropics_final_request_lists_the_tools_but_forbids_them() {
    let (s, k, fake) = with_fake(
        "anthropic_chat_completion",
        vec![Step::calls("", &[("t1", "current_time", "")]), Step::text(&["fin"])],
    );
    set_provider_settings(&s, &k, |p| p["max_agent_step"] = json!(1));
    let ev = chat(&s, &k, json!({"username": "alice", "message": "go"}));
    assert_eq!(complete(&ev), "fin");
    let last = fake.last();
    assert_eq!(last.body["tool_choice"], json!({"type": "none"}));
    let msgs = last.messages();
    // The limit prompt joins the tool results' user message (roles must alternate).
    let content = msgs.last().unwrap()["content"].as_array().unwrap().clone();
    assert_eq!(content[0]["type"], "tool_result");
    assert_eq!(content[1], json!({"type": "text", "text": LIMIT_PROMPT}));
}

#[test]
fn non_streaming_chats_run_the_loop_too() {
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![Step::calls("", &[("c1", "current_time", "{}")]), Step::text(&["Quiet answer."])],
    );
    // enable_streaming false: the upstream does not stream; the tool events still come.
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi", "enable_streaming": false}));
    assert_eq!(fake.requests()[0].body["stream"], false);
    assert_eq!(tool_events(&ev, "tool_call").len(), 1);
    let last_plain = ev.iter().rev().find(|e| e["type"] == "plain").unwrap();
    assert_eq!(last_plain["data"], "Quiet answer.");

    // Accept: application/json: one envelope with the final answer.
    fake.set(|sc| {
        sc.steps =
            vec![Step::calls("", &[("c9", "current_time", "{}")]), Step::text(&["JSON answer."])].into()
    });
    let auth = format!("Bearer {k}");
    let body = json!({"username": "alice", "message": "hi"}).to_string();
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Content-Type", "application/json"), ("Accept", "application/json")],
        Some(&body),
    );
    s.expect(&r, 200);
    assert_eq!(r.json()["data"]["response"], "JSON answer.");
    assert_eq!(fake.last().messages().last().unwrap()["role"], "tool");
}

#[test]
fn knowledge_search_returns_passages_with_titles_and_urls() {
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![
            Step::calls("", &[("c1", "knowledge_search", r#"{"query": "watering tomatoes"}"#)]),
            Step::text(&["ok"]),
        ],
    );
    let docs = s.data.path().join("notes");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("garden.md"),
        "# Garden notes\n\n## Watering tomatoes\n\nWater the tomatoes every morning before nine.\n",
    )
    .unwrap();
    let (code, _, err) =
        cli(s.data.path(), &["kb", "add", "--collection", "home", docs.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let ev = chat(&s, &k, json!({"username": "alice", "message": "garden?"}));
    let (result, _) = &tool_events(&ev, "tool_call_result")[0];
    let text = result["result"].as_str().unwrap();
    assert!(text.contains("### Garden notes › Watering tomatoes"), "{text}");
    assert!(text.contains("URL: kb:home/garden.md#watering-tomatoes"), "{text}");
    assert!(text.contains("every morning before nine"), "{text}");
    assert_eq!(fake.last().messages().last().unwrap()["content"], text);
}

#[test]
fn read_attachment_reads_this_sessions_text_files_only() {
    let (s, k, fake) = with_fake("openai_chat_completion", vec![]);
    let txt = upload_file(&s, &k, "notes.txt", Some("text/plain"), b"remember the milk");
    let png = upload_file(&s, &k, "pixel.png", Some("image/png"), crate::support::PNG);
    let args = |id: &str| json!({"attachment_id": id}).to_string();
    fake.set(|sc| {
        sc.steps = vec![
            Step::calls(
                "",
                &[("c1", "read_attachment", &args(&txt)), ("c2", "read_attachment", &args(&png))],
            ),
            Step::text(&["read"]),
            Step::calls("", &[("c3", "read_attachment", &args(&txt))]),
            Step::text(&["refused"]),
        ]
        .into()
    });
    let ev = chat(
        &s,
        &k,
        json!({"username": "alice", "session_id": "mine", "message": [
            {"type": "plain", "text": "see files"}, {"type": "file", "attachment_id": txt},
            {"type": "image", "attachment_id": png}]}),
    );
    let results: Vec<String> = tool_events(&ev, "tool_call_result")
        .into_iter()
        .map(|(v, _)| v["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results[0], "[File: notes.txt]\nremember the milk");
    assert!(
        results[1].starts_with(&format!("error: attachment {png} (pixel.png, image/png) is not a text file")),
        "{}",
        results[1]
    );

    // Another session may not read it, even knowing its id.
    let ev = chat(&s, &k, json!({"username": "alice", "session_id": "other", "message": "read theirs"}));
    let (result, _) = &tool_events(&ev, "tool_call_result")[0];
    assert_eq!(result["result"], format!("error: no attachment {txt} in this conversation"));

    // Later in its own session the model is told the file's id, to read it again.
    chat(&s, &k, json!({"username": "alice", "session_id": "mine", "message": "and now?"}));
    let named = format!("see files\n[File: notes.txt, attachment_id: {txt}]");
    let msgs = fake.last().messages();
    assert!(msgs.iter().any(|m| m["role"] == "user" && m["content"] == named.as_str()), "{msgs:?}");
}

#[test]
fn the_personas_tools_decide_what_is_offered() {
    let (s, k, fake) = with_fake("openai_chat_completion", vec![]);
    use_persona(&s, &k, "clock", json!(["current_time", "not-a-tool"]));
    chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    assert_eq!(tool_names(&fake.last(), false), ["current_time"]);

    // No tools at all: the request is exactly a chat without tools.
    use_persona(&s, &k, "plain", json!([]));
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    assert_eq!(complete(&ev), "done");
    let body = fake.last().body;
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none(), "{body}");
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["model", "messages", "stream", "stream_options"]
    );
}

#[test]
fn a_persona_without_tools_never_runs_one() {
    // A model that asks for a tool it was not offered gets no run: the request offered none,
    // so its calls are ignored and its text is the answer.
    let (s, k, fake) = with_fake(
        "openai_chat_completion",
        vec![Step::calls("Plain text.", &[("c1", "current_time", "{}")])],
    );
    use_persona(&s, &k, "plain", json!([]));
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    assert!(tool_events(&ev, "tool_call").is_empty());
    assert_eq!(complete(&ev), "Plain text.");
    assert_eq!(fake.requests().len(), 1);
}

#[test]
fn a_provider_without_tool_use_in_its_modalities_gets_no_tools() {
    let s = Server::start();
    let (k, _) = s.create_key(&s.admin_token(), ALL_SCOPES);
    let fake = FakeLlm::start(Script::reply(&["plain"]));
    let source =
        json!({"id": "fake", "type": "openai_chat_completion", "key": ["sk-1"], "api_base": fake.base()});
    s.expect(&s.call("POST", "/api/v1/provider-sources", &k, Some(source)), 200);
    let provider =
        json!({"id": "fake/m", "provider_source_id": "fake", "model": "m", "modalities": ["text", "image"]});
    s.expect(&s.call("POST", "/api/v1/providers", &k, Some(provider)), 200);
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    assert_eq!(complete(&ev), "plain");
    assert!(fake.last().body.get("tools").is_none(), "{}", fake.last().body);
    // With `tool_use` listed, the tools are offered.
    let provider = json!({"id": "fake/m", "provider_source_id": "fake", "model": "m", "modalities": ["text", "tool_use"]});
    s.expect(&s.call("PUT", "/api/v1/providers/fake/m", &k, Some(provider)), 200);
    chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    assert_eq!(tool_names(&fake.last(), false), BUILTINS);
}

#[test]
fn anthropic_without_streaming_reads_whole_tool_use_blocks() {
    let (s, k, fake) = with_fake(
        "anthropic_chat_completion",
        vec![
            Step::calls("", &[("toolu_9", "knowledge_search", r#"{"query": "zzqqxxjj"}"#)]),
            Step::text(&["Nothing found."]),
        ],
    );
    let ev = chat(&s, &k, json!({"username": "alice", "message": "find", "enable_streaming": false}));
    assert_eq!(fake.requests()[0].body["stream"], false);
    let (call, _) = &tool_events(&ev, "tool_call")[0];
    assert_eq!(call["args"], json!({"query": "zzqqxxjj"}));
    let (result, _) = &tool_events(&ev, "tool_call_result")[0];
    assert!(
        result["result"].as_str().unwrap().starts_with("No passages in the knowledge base match"),
        "{result}"
    );
    let msgs = fake.last().messages();
    assert_eq!(msgs.last().unwrap()["content"][0]["tool_use_id"], "toolu_9");
    assert_eq!(ev.iter().rev().find(|e| e["type"] == "plain").unwrap()["data"], "Nothing found.");
}

#[test]
fn an_im_bots_reply_runs_the_tools_too() {
    // A OneBot bot: the run has no stream, the events go to no one, the reply is the answer.
    let (s, admin, fake) = {
        let s = Server::start();
        let admin = s.admin_token();
        let fake = FakeLlm::start(Script::reply(&["done"]));
        fake.set(|sc| {
            sc.steps =
                vec![Step::calls("", &[("c1", "current_time", "{}")]), Step::text(&["It is late."])].into()
        });
        connect(&s, &admin, &fake, "openai_chat_completion", &["sk-x"], json!({}));
        (s, admin, fake)
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bot = json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1",
        "ws_reverse_port": port, "ws_reverse_token": "tok"});
    s.check("POST", "/api/v1/bots", &admin, Some(bot), 200, json!({"status": "ok"}));
    assert!(eventually(5, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()), "{}", s.log());
    let qq =
        crate::fake_onebot::connect(port, "10001", Some("tok")).unwrap_or_else(|c| panic!("refused: {c}"));
    let wait = std::time::Duration::from_secs(10);
    assert!(qq.wait_call("get_login_info", 0, wait).is_some(), "{}", s.log());
    qq.push_event(qq.private_message(30003, 501, json!([{"type": "text", "data": {"text": "time?"}}])));
    let reply = qq.wait_call("send_private_msg", 0, wait).unwrap_or_else(|| panic!("no reply\n{}", s.log()));
    let text: String = reply.params["message"]
        .as_array()
        .map(|segs| segs.iter().filter_map(|s| s["data"]["text"].as_str()).collect())
        .unwrap_or_else(|| reply.params["message"].as_str().unwrap_or_default().to_owned());
    assert_eq!(text, "It is late.");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].messages().last().unwrap()["tool_call_id"], "c1");
}
