//! The commands other than `serve`: API keys, the admin password and knowledge
//! collections, run on the data folder directly whether a server runs or not (SQLite
//! serialises the writers, and a running server notices key changes within a second).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::data::open_existing_store;
use crate::auth::DEFAULT_ADMIN;
use crate::db;
use crate::keys::{self, NewKey};
use crate::secrets;
use crate::timefmt::{iso, now_micros};

pub(super) fn key_create(data: &Path, key: &NewKey, json: bool) -> Result<(), String> {
    let (db, mac) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    let now = now_micros();
    let (saved, raw) = keys::create(&mut conn, &mac, key, "cli", now).map_err(|e| e.message())?;
    if json {
        println!("{}", keys::created_json(&saved, &raw, now));
        return Ok(());
    }
    println!("{raw}");
    let row = &saved.row;
    eprintln!(
        "created key {} \"{}\" with scopes {}{}; the key above is shown only once",
        row.key_id,
        row.name,
        row.scopes.clone().unwrap_or_default().join(","),
        row.bot_id.as_ref().map(|b| format!(", bound to bot {b}")).unwrap_or_default()
    );
    if let Some(secret) = &saved.webhook_secret {
        eprintln!("webhook signing secret (shown only once): {secret}");
    }
    Ok(())
}

pub(super) fn key_update(
    data: &Path,
    key_id: &str,
    patch: &keys::KeyPatch,
    json: bool,
) -> Result<(), String> {
    let (db, mac) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    let now = now_micros();
    let saved = keys::update(&mut conn, &mac, key_id, patch, now)
        .map_err(|e| e.message())?
        .ok_or("API key not found")?;
    let usage = db::usage_count(&conn, key_id, crate::timefmt::utc_day(now)).unwrap_or(0);
    if json {
        println!("{}", keys::saved_json(&saved, now, usage));
        return Ok(());
    }
    let row = &saved.row;
    println!(
        "updated {}: name \"{}\", daily limit {}, expires {}, bot {}, webhook {}",
        row.key_id,
        row.name,
        row.daily_limit.map_or("default".into(), |n| n.to_string()),
        row.expires_at.map_or("never".into(), iso),
        row.bot_id.as_deref().unwrap_or("none"),
        row.webhook_url.as_deref().unwrap_or("none"),
    );
    if let Some(secret) = &saved.webhook_secret {
        println!("webhook signing secret (shown only once): {secret}");
    }
    Ok(())
}

/// Adds documents to a collection, replacing what it held: each file is split at its
/// headings (`kb::split_documents`, shared with the HTTP route); directories are read one
/// level deep.
pub(super) fn kb_add(
    data: &Path,
    collection: &str,
    paths: &[PathBuf],
    base_url: Option<&str>,
) -> Result<(), String> {
    if collection == "docs" {
        return Err("collection docs holds the bundled guides; choose another name".into());
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    let mut documents = Vec::new();
    for f in &files {
        let name = f.file_name().and_then(|s| s.to_str()).unwrap_or("document").to_owned();
        if !crate::kb::readable(&name) {
            eprintln!("skipping {} (not Markdown, text or HTML)", f.display());
            continue;
        }
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        documents.push((name, text));
    }
    let split = crate::kb::split_documents(
        collection,
        documents.iter().map(|(n, t)| (n.as_str(), t.as_str())),
        base_url,
    );
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    crate::kb::replace_collection(&mut conn, collection, &split.passages)?;
    println!("collection {collection}: {} passages from {} files", split.passages.len(), split.used.len());
    Ok(())
}

pub(super) fn key_list(data: &Path, json: bool) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let conn = db.conn().map_err(|e| e.to_string())?;
    let rows = db::list_keys(&conn).map_err(|e| e.to_string())?;
    let now = now_micros();
    let day = crate::timefmt::utc_day(now);
    let usage = |key_id: &str| db::usage_count(&conn, key_id, day).unwrap_or(0);
    if json {
        let items: Vec<Value> = rows.iter().map(|r| keys::to_json(r, now, usage(&r.key_id))).collect();
        println!("{}", Value::Array(items));
        return Ok(());
    }
    let header =
        ["KEY_ID", "PREFIX", "STATE", "LAST_USED", "EXPIRES", "TODAY", "NAME", "SCOPES", "BOT", "WEBHOOK"];
    let table: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let state = if r.revoked_at.is_some() {
                "revoked"
            } else if r.expires_at.is_some_and(|t| t < now) {
                "expired"
            } else {
                "active"
            };
            // Both times to the second, in UTC: a fixed width, and the fraction says nothing.
            let second = |t: Option<i64>, none: &str| {
                t.map(|t| iso(t)[..19].to_owned()).unwrap_or_else(|| none.into())
            };
            [
                r.key_id.clone(),
                r.key_prefix.clone(),
                state.to_owned(),
                second(r.last_used_at, "never"),
                second(r.expires_at, "never"),
                usage(&r.key_id).to_string(),
                r.name.clone(),
                r.scopes.clone().unwrap_or_default().join(","),
                r.bot_id.clone().unwrap_or_else(|| "-".into()),
                r.webhook_url.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print!("{}", columns(&header, &table));
    Ok(())
}

/// Rows as aligned columns, each as wide as its widest cell (counted in characters, as a
/// terminal shows names), two spaces apart; the last column is not padded.
fn columns<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(super) fn admin_password(data: &Path, username: Option<String>) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    let username = match username {
        Some(u) => u,
        None => db::admin_username(&conn).map_err(|e| e.to_string())?.unwrap_or_else(|| DEFAULT_ADMIN.into()),
    };
    if io::stdin().is_terminal() {
        eprint!("new password for {username}: ");
        let _ = io::stderr().flush();
    }
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']);
    crate::auth::check_new_password(password)?;
    let phc = secrets::hash_password(password)?;
    db::write_tx(&mut conn, |tx| db::set_admin_password(tx, &username, &phc, now_micros()))
        .map_err(|e| e.to_string())?;
    println!("password of {username} changed; every admin token of {username} has been signed out");
    Ok(())
}

pub(super) fn kb_list(data: &Path) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let conn = db.conn().map_err(|e| e.to_string())?;
    for (name, count) in db::kb::collections(&conn).map_err(|e| e.to_string())? {
        println!("{name}\t{count} passages");
    }
    Ok(())
}

pub(super) fn kb_remove(data: &Path, collection: &str) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    if !crate::kb::remove_collection(&mut conn, collection)? {
        return Err(format!("no collection named {collection}"));
    }
    println!("removed collection {collection}");
    Ok(())
}

pub(super) fn key_revoke(data: &Path, key_id: &str) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    if !db::write_tx(&mut conn, |tx| db::revoke_key(tx, key_id, now_micros())).map_err(|e| e.to_string())? {
        return Err("API key not found".into());
    }
    println!("revoked {key_id}");
    Ok(())
}

pub(super) fn key_delete(data: &Path, key_id: &str) -> Result<(), String> {
    let (db, _) = open_existing_store(data)?;
    let mut conn = db.conn().map_err(|e| e.to_string())?;
    if !db::write_tx(&mut conn, |tx| db::delete_key(tx, key_id)).map_err(|e| e.to_string())? {
        return Err("API key not found".into());
    }
    println!("deleted {key_id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_list_columns_align_whatever_the_cell_widths() {
        let rows = [
            ["a".to_owned(), "2126-01-01T00:00:00".to_owned(), "x".to_owned()],
            ["long-key-id".to_owned(), "never".to_owned(), "y".to_owned()],
        ];
        let out = columns(&["KEY_ID", "EXPIRES", "NAME"], &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "KEY_ID       EXPIRES              NAME");
        assert_eq!(lines[1], "a            2126-01-01T00:00:00  x");
        assert_eq!(lines[2], "long-key-id  never                y");
    }
}
