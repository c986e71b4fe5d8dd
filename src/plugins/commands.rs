//! AstrBot's command matching (`CommandFilter`, plugins-skills §1.4) against the commands
//! the enabled plugins declare, done here so a plugin process starts only for a message
//! that is its command and receives its arguments already parsed.
//!
//! The text after the wake prefix, runs of whitespace collapsed, must equal a full command
//! name (group path, then the name or an alias) or start with one followed by a space; the
//! longest full name wins. The remaining words bind to the parameters in order: `int`,
//! `float`, `bool` (`true/yes/1/false/no/0`) converted, a greedy string takes the rest.
//! A missing or mistyped value, or a non-administrator on an admin command, is answered
//! with AstrBot's texts and never reaches the plugin.

use serde_json::{Map, Value};

use super::manifest::{Command, Param, ParamType};

/// What a message is, as far as plugin commands go.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Call `command` of `plugin` with `args`.
    Call { plugin: String, command: Command, args: Map<String, Value> },
    /// Answer with this text (a refusal: parameters or permission).
    Reply(String),
}

/// Matches `rest` (the message without its wake prefix) against the plugins' commands.
/// `None`: not a plugin command.
pub fn find<'a>(
    plugins: impl IntoIterator<Item = (&'a str, &'a [Command])>,
    rest: &str,
    is_admin: bool,
    sender_id: &str,
) -> Option<Outcome> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let mut best: Option<(&str, &Command, usize)> = None;
    for (plugin, commands) in plugins {
        for command in commands {
            for full in command.full_names() {
                let n = full.split(' ').count();
                if words.len() >= n
                    && words[..n].iter().zip(full.split(' ')).all(|(w, f)| *w == f)
                    && best.is_none_or(|(_, _, m)| n > m)
                {
                    best = Some((plugin, command, n));
                }
            }
        }
    }
    let (plugin, command, n) = best?;
    if command.admin && !is_admin {
        return Some(Outcome::Reply(format!(
            "您(ID: {sender_id})的权限不足以使用此指令。通过 /sid 获取 ID 并请管理员添加。"
        )));
    }
    Some(match bind(&command.params, &words[n..]) {
        Ok(args) => Outcome::Call { plugin: plugin.to_owned(), command: command.clone(), args },
        Err(reply) => Outcome::Reply(reply),
    })
}

/// `name(type)` or `name(type)=default`, comma-separated: the parameters as the error
/// texts list them.
fn signature(params: &[Param]) -> String {
    let one = |p: &Param| match &p.default {
        None => format!("{}({})", p.name, p.kind.name()),
        Some(d) => format!("{}({})={}", p.name, p.kind.name(), d),
    };
    format!("({})", params.iter().map(one).collect::<Vec<_>>().join(","))
}

fn bind(params: &[Param], words: &[&str]) -> Result<Map<String, Value>, String> {
    let mut args = Map::new();
    for (i, p) in params.iter().enumerate() {
        let given = if p.greedy {
            (i < words.len()).then(|| words[i..].join(" "))
        } else {
            words.get(i).map(|w| (*w).to_owned())
        };
        let value = match given {
            None => match &p.default {
                Some(d) => d.clone(),
                None => return Err(format!("必要参数缺失。该指令完整参数: {}", signature(params))),
            },
            Some(w) => convert(p.kind, &w)
                .ok_or_else(|| format!("参数 {} 类型错误。完整参数: {}", p.name, signature(params)))?,
        };
        args.insert(p.name.clone(), value);
    }
    Ok(args)
}

fn convert(kind: ParamType, word: &str) -> Option<Value> {
    match kind {
        ParamType::String => Some(Value::String(word.to_owned())),
        ParamType::Int => word.parse::<i64>().ok().map(Value::from),
        ParamType::Float => word.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from),
        ParamType::Bool => match word.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(Value::Bool(true)),
            "false" | "no" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(name: &str, group: &[&str], params: Vec<Param>) -> Command {
        Command {
            name: name.into(),
            aliases: vec![format!("{name}x")],
            group: group.iter().map(|s| s.to_string()).collect(),
            admin: false,
            description: String::new(),
            params,
        }
    }

    fn param(name: &str, kind: ParamType, default: Option<Value>, greedy: bool) -> Param {
        Param { name: name.into(), kind, default, greedy }
    }

    #[test]
    fn commands_match_with_typed_parameters() {
        let roll = cmd("roll", &[], vec![param("sides", ParamType::Int, Some(json!(6)), false)]);
        let add = cmd(
            "add",
            &["math"],
            vec![param("a", ParamType::Float, None, false), param("note", ParamType::String, None, true)],
        );
        let plugins = [("dice", std::slice::from_ref(&roll)), ("calc", std::slice::from_ref(&add))];
        let call = |text: &str| find(plugins.iter().map(|(p, c)| (*p, *c)), text, false, "u1");
        match call("roll   20").unwrap() {
            Outcome::Call { plugin, args, .. } => {
                assert_eq!(plugin, "dice");
                assert_eq!(Value::Object(args), json!({"sides": 20}));
            }
            o => panic!("{o:?}"),
        }
        match call("rollx").unwrap() {
            Outcome::Call { args, .. } => assert_eq!(Value::Object(args), json!({"sides": 6})),
            o => panic!("{o:?}"),
        }
        match call("math add 1.5 two words").unwrap() {
            Outcome::Call { args, .. } => {
                assert_eq!(Value::Object(args), json!({"a": 1.5, "note": "two words"}))
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(call("rolling"), None);
        assert_eq!(call("math"), None);
        assert_eq!(
            call("roll six"),
            Some(Outcome::Reply("参数 sides 类型错误。完整参数: (sides(int)=6)".into()))
        );
        assert_eq!(
            call("math add 1"),
            Some(Outcome::Reply("必要参数缺失。该指令完整参数: (a(float),note(str))".into()))
        );
        assert_eq!(
            call("roll 99999999999999999999"),
            Some(Outcome::Reply("参数 sides 类型错误。完整参数: (sides(int)=6)".into()))
        );
    }

    #[test]
    fn admin_commands_refuse_others() {
        let mut c = cmd("ban", &[], vec![]);
        c.admin = true;
        let plugins = [("mod", std::slice::from_ref(&c))];
        assert_eq!(
            find(plugins.iter().map(|(p, c)| (*p, *c)), "ban", false, "alice"),
            Some(Outcome::Reply(
                "您(ID: alice)的权限不足以使用此指令。通过 /sid 获取 ID 并请管理员添加。".into()
            ))
        );
        assert!(matches!(
            find(plugins.iter().map(|(p, c)| (*p, *c)), "ban", true, "alice"),
            Some(Outcome::Call { .. })
        ));
    }
}
