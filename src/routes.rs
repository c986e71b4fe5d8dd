//! The route table: every route the binary serves, one line each, with its method, path,
//! access (the scope it needs), body kind, handler and the schemas the OpenAPI document
//! shows for it. `openapi` builds the document from this table and a test keeps the two
//! equal; `pipeline` matches requests against it.

use crate::api;
use crate::app::Ctx;
use crate::error::ApiError;
use crate::http::Response;

pub type Handler = fn(&mut Ctx<'_, '_>) -> Result<Response, ApiError>;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// An API key holding this scope, or the admin token.
    Scope(&'static str),
    /// The admin token only; API keys get 403 (AstrBot's `system` scope).
    Admin,
    /// AstrBot's legacy dashboard routes: the admin token only, with the dashboard's
    /// Chinese 401 messages.
    Dashboard,
}

impl Access {
    /// The value of `x-astrbot-scope` in the OpenAPI document.
    pub fn scope_name(self) -> &'static str {
        match self {
            Access::Public => "none",
            Access::Scope(s) => s,
            Access::Admin | Access::Dashboard => "system",
        }
    }
}

/// What a route reads from its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// A JSON document up to 1 MiB, parsed before authentication.
    Json,
    /// A multipart upload up to `--max-upload-mb`, read by the handler after authentication.
    Upload,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub body: Body,
    pub handler: Handler,
    /// One line for the reference.
    pub summary: &'static str,
    pub tag: &'static str,
    /// Component schema of the request body, if any.
    pub request: Option<&'static str>,
    /// Component schema of `data` in the success envelope; `None` for non-envelope answers.
    pub response: Option<&'static str>,
}

use Access::{Admin, Dashboard, Public, Scope};
use Body::{Json, None as NoBody, Upload};

macro_rules! route {
    ($m:literal $p:literal, $access:expr, $body:expr, $h:path, $tag:literal, $summary:literal, $req:expr, $resp:expr) => {
        Route {
            method: $m,
            path: $p,
            access: $access,
            body: $body,
            handler: $h,
            summary: $summary,
            tag: $tag,
            request: $req,
            response: $resp,
        }
    };
}

#[rustfmt::skip]
pub static ROUTES: &[Route] = &[
    route!("POST" "/api/v1/im/messages", Scope("im"), Json, api::im::send_message, "IM", "Send a proactive message to a UMO (webchat: into live streams, else the history)", Some("ImMessage"), Some("Empty")),
    route!("POST" "/api/v1/im/message",  Scope("im"), Json, api::im::send_message, "IM", "Alias of POST /api/v1/im/messages", Some("ImMessage"), Some("Empty")),
    route!("GET" "/api/v1/im/bots",                   Scope("im"), NoBody, api::im::list_bots,      "IM",       "List the ids of the configured bots", None, Some("BotIds")),
    route!("GET" "/api/v1/api-keys",                  Admin,       NoBody, api::keys::list,         "API keys", "List API keys, newest first", None, Some("ApiKeyList")),
    route!("POST" "/api/v1/api-keys",                 Admin,       Json,   api::keys::create,       "API keys", "Create an API key (the raw key is shown once)", Some("ApiKeyCreate"), Some("ApiKeyCreated")),
    route!("POST" "/api/v1/api-keys/{key_id}/revoke", Admin,       NoBody, api::keys::revoke,       "API keys", "Revoke an API key", None, Some("Empty")),
    route!("DELETE" "/api/v1/api-keys/{key_id}",      Admin,       NoBody, api::keys::delete,       "API keys", "Delete an API key", None, Some("Empty")),
    route!("PATCH" "/api/v1/api-keys/{key_id}",       Admin,       Json,   api::keys::update,       "API keys", "Update an API key: name, daily limit, expiry, bot, webhook URL (beyond AstrBot)", Some("ApiKeyPatch"), Some("ApiKeyUpdated")),
    route!("POST" "/api/v1/api-keys/{key_id}/webhook/rotate", Admin, NoBody, api::keys::rotate_webhook, "API keys", "A new webhook signing secret, shown once (beyond AstrBot)", None, Some("WebhookSecret")),
    route!("GET" "/api/v1/api-keys/{key_id}/webhook/deliveries", Admin, NoBody, api::keys::deliveries, "API keys", "The key's recent webhook events and their delivery state (?limit=, beyond AstrBot)", None, Some("WebhookDeliveries")),
    route!("POST" "/api/v1/api-keys/{key_id}/webhook/deliveries/{delivery_id}/retry", Admin, NoBody, api::keys::retry_delivery, "API keys", "Deliver a webhook event again now (beyond AstrBot)", None, Some("WebhookDelivery")),
    route!("GET" "/api/apikey/list",                  Dashboard,   NoBody, api::keys::list,         "Legacy",   "List API keys (AstrBot dashboard route)", None, Some("ApiKeyList")),
    route!("POST" "/api/apikey/create",               Dashboard,   Json,   api::keys::create,       "Legacy",   "Create an API key (AstrBot dashboard route)", Some("ApiKeyCreate"), Some("ApiKeyCreated")),
    route!("POST" "/api/apikey/revoke",               Dashboard,   Json,   api::keys::legacy_revoke, "Legacy",  "Revoke an API key (AstrBot dashboard route)", Some("KeyIdBody"), Some("Empty")),
    route!("POST" "/api/apikey/delete",               Dashboard,   Json,   api::keys::legacy_delete, "Legacy",  "Delete an API key (AstrBot dashboard route)", Some("KeyIdBody"), Some("Empty")),
    // Bots (IM platforms): fixed paths before the `{bot_id:path}` ones they also match.
    route!("GET" "/api/v1/bots",                       Scope("bot"), NoBody, api::bots::list,             "Bots", "List bots with their adapters' state, tokens masked (?enabled=&type=)", None, Some("BotList")),
    route!("POST" "/api/v1/bots",                      Scope("bot"), Json,   api::bots::create,           "Bots", "Create a bot; its adapter starts at once when enabled", Some("BotBody"), Some("Empty")),
    route!("GET" "/api/v1/bots/by-id",                 Scope("bot"), NoBody, api::bots::get_query,        "Bots", "Get a bot (?bot_id=)", None, Some("BotOne")),
    route!("PUT" "/api/v1/bots/by-id",                 Scope("bot"), Json,   api::bots::update_body,      "Bots", "Replace a bot (bot_id in the body); its adapter restarts", Some("BotUpdateById"), Some("Empty")),
    route!("DELETE" "/api/v1/bots/by-id",              Scope("bot"), NoBody, api::bots::delete_query,     "Bots", "Delete a bot and stop its adapter (?bot_id=)", None, Some("Empty")),
    route!("PATCH" "/api/v1/bots/enabled",             Scope("bot"), Json,   api::bots::set_enabled_body, "Bots", "Enable or disable a bot (bot_id in the body)", Some("BotEnabledBody"), Some("Empty")),
    route!("POST" "/api/v1/bots/test",                 Scope("bot"), Json,   api::bots::test_body,        "Bots", "Check a bot's connection (bot_id in the body)", Some("BotIdBody"), Some("BotTest")),
    route!("PATCH" "/api/v1/bots/{bot_id:path}/enabled", Scope("bot"), Json, api::bots::set_enabled_path, "Bots", "Enable or disable a bot", Some("EnabledPathBody"), Some("Empty")),
    route!("POST" "/api/v1/bots/{bot_id:path}/test",   Scope("bot"), Json,   api::bots::test,             "Bots", "Check a bot's connection: Telegram getMe, OneBot's connected accounts", None, Some("BotTest")),
    route!("GET" "/api/v1/bots/{bot_id:path}",         Scope("bot"), NoBody, api::bots::get,              "Bots", "Get a bot", None, Some("BotOne")),
    route!("PUT" "/api/v1/bots/{bot_id:path}",         Scope("bot"), Json,   api::bots::update_path,      "Bots", "Replace a bot; its adapter restarts", Some("BotBody"), Some("Empty")),
    route!("DELETE" "/api/v1/bots/{bot_id:path}",      Scope("bot"), NoBody, api::bots::delete,           "Bots", "Delete a bot and stop its adapter", None, Some("Empty")),
    route!("GET" "/api/v1/bot-types",                  Scope("bot"), NoBody, api::bots::bot_types,        "Bots", "The bot types with their fields' schema and defaults", None, Some("BotTypes")),
    // Provider sources and providers: fixed paths before the `{id:path}` ones they also match.
    route!("GET" "/api/v1/provider-sources",                    Scope("provider"), NoBody, api::providers::list_sources,        "Providers", "List provider sources (keys masked)", None, Some("ProviderSourceList")),
    route!("POST" "/api/v1/provider-sources",                   Scope("provider"), Json,   api::providers::create_source,       "Providers", "Create or replace a provider source", Some("ProviderSourceCreate"), Some("Empty")),
    route!("GET" "/api/v1/provider-sources/by-id",              Scope("provider"), NoBody, api::providers::get_source_query,    "Providers", "Get a provider source (?source_id=)", None, Some("ProviderSourceOne")),
    route!("PUT" "/api/v1/provider-sources/by-id",              Scope("provider"), Json,   api::providers::update_source_body,  "Providers", "Update or rename a provider source (source_id in the body)", Some("ProviderSourceUpdateById"), Some("Empty")),
    route!("DELETE" "/api/v1/provider-sources/by-id",           Scope("provider"), NoBody, api::providers::delete_source_query, "Providers", "Delete a provider source and its providers (?source_id=)", None, Some("Empty")),
    route!("GET" "/api/v1/provider-sources/{source_id:path}",   Scope("provider"), NoBody, api::providers::get_source,          "Providers", "Get a provider source", None, Some("ProviderSourceOne")),
    route!("PUT" "/api/v1/provider-sources/{source_id:path}",   Scope("provider"), Json,   api::providers::update_source,       "Providers", "Update or rename a provider source", Some("ProviderSourceBody"), Some("Empty")),
    route!("DELETE" "/api/v1/provider-sources/{source_id:path}", Scope("provider"), NoBody, api::providers::delete_source,       "Providers", "Delete a provider source and its providers", None, Some("Empty")),
    route!("GET" "/api/v1/providers",                           Scope("provider"), NoBody, api::providers::list_providers,      "Providers", "List providers, merged with their sources (?capability=&source_id=&enabled=)", None, Some("ProviderList")),
    route!("POST" "/api/v1/providers",                          Scope("provider"), Json,   api::providers::create_provider,     "Providers", "Create a provider (a model on a source)", Some("ProviderBody"), Some("Empty")),
    route!("GET" "/api/v1/providers/by-id",                     Scope("provider"), NoBody, api::providers::get_provider_query,  "Providers", "Get a provider (?provider_id=&merged=)", None, Some("ProviderOne")),
    route!("PUT" "/api/v1/providers/by-id",                     Scope("provider"), Json,   api::providers::update_provider_body, "Providers", "Replace a provider (provider_id in the body)", Some("ProviderBody"), Some("Empty")),
    route!("DELETE" "/api/v1/providers/by-id",                  Scope("provider"), NoBody, api::providers::delete_provider_query, "Providers", "Delete a provider (?provider_id=)", None, Some("Empty")),
    route!("POST" "/api/v1/providers/test", Scope("provider"), Json, api::providers::test_provider_body, "Providers", "Send the PONG probe to a provider (provider_id in the body)", Some("ProviderIdBody"), Some("ProviderTest")),
    route!("POST" "/api/v1/providers/{provider_id:path}/test", Scope("provider"), Json, api::providers::test_provider, "Providers", "Send the PONG probe to a provider", None, Some("ProviderTest")),
    route!("PATCH" "/api/v1/providers/enabled",                 Scope("provider"), Json,   api::providers::set_enabled_body,    "Providers", "Enable or disable a provider (provider_id in the body)", Some("EnabledBody"), Some("Empty")),
    route!("PATCH" "/api/v1/providers/{provider_id:path}/enabled", Scope("provider"), Json, api::providers::set_enabled_path,   "Providers", "Enable or disable a provider", Some("EnabledPathBody"), Some("Empty")),
    route!("GET" "/api/v1/providers/{provider_id:path}",        Scope("provider"), NoBody, api::providers::get_provider,        "Providers", "Get a provider (?merged=)", None, Some("ProviderOne")),
    route!("PUT" "/api/v1/providers/{provider_id:path}",        Scope("provider"), Json,   api::providers::update_provider,     "Providers", "Replace a provider", Some("ProviderBody"), Some("Empty")),
    route!("DELETE" "/api/v1/providers/{provider_id:path}",     Scope("provider"), NoBody, api::providers::delete_provider,     "Providers", "Delete a provider", None, Some("Empty")),
    // MCP servers: fixed paths before the `{server_name:path}` ones they also match.
    route!("GET" "/api/v1/mcp/servers",                              Scope("mcp"), NoBody, api::mcp::list,             "MCP", "List MCP servers: config (secrets masked), connected, tools, errlogs, state", None, Some("McpServerList")),
    route!("POST" "/api/v1/mcp/servers",                             Scope("mcp"), Json,   api::mcp::create,           "MCP", "Add an MCP server; an active one is connected first (the test) and keeps running", Some("McpServerBody"), Some("Empty")),
    route!("PUT" "/api/v1/mcp/servers/by-name",                      Scope("mcp"), Json,   api::mcp::update_body,      "MCP", "Update or rename an MCP server (server_name in the body)", Some("McpServerByName"), Some("Empty")),
    route!("DELETE" "/api/v1/mcp/servers/by-name",                   Scope("mcp"), NoBody, api::mcp::delete_query,     "MCP", "Delete an MCP server and stop it (?server_name=)", None, Some("Empty")),
    route!("PATCH" "/api/v1/mcp/servers/enabled",                    Scope("mcp"), Json,   api::mcp::set_enabled_body, "MCP", "Enable or disable an MCP server (server_name in the body)", Some("McpEnabledByName"), Some("Empty")),
    route!("POST" "/api/v1/mcp/servers/test",                        Scope("mcp"), Json,   api::mcp::test_body,        "MCP", "Test a connection (server_name, and the config or the stored one); nothing is stored", Some("McpTestByName"), Some("McpToolNames")),
    route!("PATCH" "/api/v1/mcp/servers/{server_name:path}/enabled", Scope("mcp"), Json,   api::mcp::set_enabled_path, "MCP", "Enable or disable an MCP server", Some("EnabledPathBody"), Some("Empty")),
    route!("POST" "/api/v1/mcp/servers/{server_name:path}/test",     Scope("mcp"), Json,   api::mcp::test,             "MCP", "Test a connection (the body's config, else the stored one): the tool names; nothing is stored", Some("McpTestBody"), Some("McpToolNames")),
    route!("PUT" "/api/v1/mcp/servers/{server_name:path}",           Scope("mcp"), Json,   api::mcp::update_path,      "MCP", "Update or rename an MCP server; it restarts when active", Some("McpServerBody"), Some("Empty")),
    route!("DELETE" "/api/v1/mcp/servers/{server_name:path}",        Scope("mcp"), NoBody, api::mcp::delete,           "MCP", "Delete an MCP server and stop it", None, Some("Empty")),
    route!("POST" "/api/v1/mcp/providers/modelscope/sync",           Scope("mcp"), Json,   api::mcp::modelscope_sync,  "MCP", "Store and start ModelScope's hosted MCP servers (the access token is not stored)", Some("ModelScopeSync"), Some("Empty")),
    route!("GET" "/api/v1/skills",                                  Scope("skill"), NoBody, api::skills::list,          "Skills", "List local skills: name, description, active, source", None, Some("SkillList")),
    route!("POST" "/api/v1/skills",                                 Scope("skill"), Upload, api::skills::upload,        "Skills", "Upload a skill archive (multipart field `file`: .zip, or .tar.gz/.tgz)", Some("Upload"), Some("SkillUploaded")),
    route!("POST" "/api/v1/skills/batch",                           Scope("skill"), Upload, api::skills::upload_batch,  "Skills", "Upload a skill archive (as POST /api/v1/skills; one archive may hold several skills)", Some("Upload"), Some("SkillUploaded")),
    route!("PATCH" "/api/v1/skills/by-name",                        Scope("skill"), Json,   api::skills::patch_body,    "Skills", "Enable or disable a skill (skill_name in the body)", Some("SkillActiveByName"), Some("SkillActive")),
    route!("DELETE" "/api/v1/skills/by-name",                       Scope("skill"), NoBody, api::skills::delete_query,  "Skills", "Delete a local skill (?skill_name=)", None, Some("SkillName")),
    route!("GET" "/api/v1/skills/files",                            Scope("skill"), NoBody, api::skills::files_query,   "Skills", "List a folder of a skill (?skill_name=&path=)", None, Some("SkillFiles")),
    route!("GET" "/api/v1/skills/file",                             Scope("skill"), NoBody, api::skills::read_query,    "Skills", "Read a skill's text file (?skill_name=&path=)", None, Some("SkillFile")),
    route!("PUT" "/api/v1/skills/file",                             Scope("skill"), Json,   api::skills::write_body,    "Skills", "Replace an existing text file of a skill (JSON skill_name, path, content)", Some("SkillFileWrite"), Some("SkillFileWritten")),
    route!("POST" "/api/v1/skills/neo/sync",                        Scope("skill"), Json,   api::skills::neo_sync,      "Skills", "Sync a skill release from Shipyard Neo (needs the sandbox endpoint and token)", Some("SkillNeoSync"), Some("Empty")),
    route!("GET" "/api/v1/skills/{skill_name}/files",               Scope("skill"), NoBody, api::skills::files_path,    "Skills", "List a folder of a skill (?path=, default its root)", None, Some("SkillFiles")),
    route!("GET" "/api/v1/skills/{skill_name}/files/{file_path:path}", Scope("skill"), NoBody, api::skills::read_path,  "Skills", "Read a skill's text file (JSON envelope)", None, Some("SkillFile")),
    route!("PUT" "/api/v1/skills/{skill_name}/files/{file_path:path}", Scope("skill"), NoBody, api::skills::write_path, "Skills", "Replace an existing text file of a skill (the raw body, UTF-8, at most 512 KiB)", None, Some("SkillFileWritten")),
    route!("GET" "/api/v1/skills/{skill_name}/archive",             Scope("skill"), NoBody, api::skills::download,      "Skills", "Download a skill as a zip (real HTTP statuses on failure)", None, None),
    route!("PATCH" "/api/v1/skills/{skill_name}",                   Scope("skill"), Json,   api::skills::patch_path,    "Skills", "Enable or disable a skill ({enabled} or {active}; {} is true)", Some("SkillActiveBody"), Some("SkillActive")),
    route!("DELETE" "/api/v1/skills/{skill_name}",                  Scope("skill"), NoBody, api::skills::delete_path,   "Skills", "Delete a local skill (names validated)", None, Some("SkillName")),
    // Plugins: fixed paths before the `{plugin_id}` ones they also match.
    route!("GET" "/api/v1/plugins",                         Scope("plugin"), NoBody, api::plugins::list,              "Plugins", "List installed plugins with their process state (?name= or ?plugin_id=: that one); the message lists the folders that failed to load", None, Some("PluginList")),
    route!("GET" "/api/v1/plugins/by-id",                   Scope("plugin"), NoBody, api::plugins::detail_query,      "Plugins", "A plugin with its components: commands and LLM tools (?plugin_id=)", None, Some("PluginDetail")),
    route!("DELETE" "/api/v1/plugins/by-id",                Scope("plugin"), Json,   api::plugins::uninstall_query,   "Plugins", "Uninstall a plugin (?plugin_id=; optional body delete_config, delete_data)", Some("PluginUninstall"), Some("Empty")),
    route!("GET" "/api/v1/plugins/failed",                  Scope("plugin"), NoBody, api::plugins::failed,            "Plugins", "The plugin folders that failed to load, with the reason", None, Some("PluginFailed")),
    route!("DELETE" "/api/v1/plugins/failed/{dir_name}",    Scope("plugin"), Json,   api::plugins::uninstall_failed,  "Plugins", "Remove a plugin folder that failed to load (optional body delete_config, delete_data)", Some("PluginUninstall"), Some("Empty")),
    route!("GET" "/api/v1/plugins/readme",                  Scope("plugin"), NoBody, api::plugins::readme_query,      "Plugins", "A plugin's README.md (?plugin_id=)", None, Some("PluginReadme")),
    route!("GET" "/api/v1/plugins/config",                  Scope("plugin"), NoBody, api::plugins::config_query_get,  "Plugins", "A plugin's config and its schema (?plugin_id=; nulls when it has none)", None, Some("PluginConfig")),
    route!("PUT" "/api/v1/plugins/config",                  Scope("plugin"), Json,   api::plugins::config_put_body,   "Plugins", "Validate and save a plugin's config (plugin_id in the body); its process restarts at its next call", Some("PluginConfigById"), Some("Empty")),
    route!("GET" "/api/v1/plugins/config/schema",           Scope("plugin"), NoBody, api::plugins::schema_query,      "Plugins", "A plugin's config schema and config (?plugin_id=)", None, Some("PluginConfig")),
    route!("PATCH" "/api/v1/plugins/enabled",               Scope("plugin"), Json,   api::plugins::enabled_body,      "Plugins", "Enable or disable a plugin (plugin_id in the body)", Some("PluginEnabledById"), Some("Empty")),
    route!("POST" "/api/v1/plugins/reload",                 Scope("plugin"), Json,   api::plugins::reload_body,       "Plugins", "Read a plugin folder again (plugin_id in the body)", Some("PluginIdBody"), Some("Empty")),
    route!("POST" "/api/v1/plugins/install/url",            Scope("plugin"), Json,   api::plugins::install_url,       "Plugins", "Install a plugin from an archive URL, a GitHub repository or the marketplace", Some("PluginInstall"), Some("PluginInstalled")),
    route!("POST" "/api/v1/plugins/install/upload",         Scope("plugin"), Upload, api::plugins::install_upload,    "Plugins", "Install an uploaded plugin archive (multipart field `file`: .zip or .tar.gz; ignore_version_check)", Some("PluginUpload"), Some("PluginInstalled")),
    route!("GET" "/api/v1/plugins/market",                  Scope("plugin"), NoBody, api::plugins::market,            "Plugins", "The marketplace registry as its source serves it, cached (?custom_registry=&force_refresh=)", None, Some("PluginMarket")),
    route!("GET" "/api/v1/plugins/market/categories",       Scope("plugin"), NoBody, api::plugins::market_categories, "Plugins", "Marketplace categories (always none)", None, Some("PluginCategories")),
    route!("GET" "/api/v1/plugins/{plugin_id}",             Scope("plugin"), NoBody, api::plugins::detail,            "Plugins", "A plugin with its components: commands and LLM tools", None, Some("PluginDetail")),
    route!("DELETE" "/api/v1/plugins/{plugin_id}",          Scope("plugin"), Json,   api::plugins::uninstall,         "Plugins", "Uninstall a plugin: its process stopped, its folder removed (optional body delete_config, delete_data)", Some("PluginUninstall"), Some("Empty")),
    route!("GET" "/api/v1/plugins/{plugin_id}/readme",      Scope("plugin"), NoBody, api::plugins::readme,            "Plugins", "A plugin's README.md", None, Some("PluginReadme")),
    route!("GET" "/api/v1/plugins/{plugin_id}/config",      Scope("plugin"), NoBody, api::plugins::config_get,        "Plugins", "A plugin's config and its schema (nulls when it has none)", None, Some("PluginConfig")),
    route!("PUT" "/api/v1/plugins/{plugin_id}/config",      Scope("plugin"), Json,   api::plugins::config_put,        "Plugins", "Validate and save a plugin's config ({config} or the config itself); its process restarts at its next call", Some("PluginConfigBody"), Some("Empty")),
    route!("GET" "/api/v1/plugins/{plugin_id}/config/schema", Scope("plugin"), NoBody, api::plugins::schema_get,      "Plugins", "A plugin's config schema and config", None, Some("PluginConfig")),
    route!("PATCH" "/api/v1/plugins/{plugin_id}/enabled",   Scope("plugin"), Json,   api::plugins::enabled_path,      "Plugins", "Enable or disable a plugin", Some("EnabledPathBody"), Some("Empty")),
    route!("POST" "/api/v1/plugins/{plugin_id}/reload",     Scope("plugin"), NoBody, api::plugins::reload,            "Plugins", "Read a plugin folder again", None, Some("Empty")),
    route!("GET" "/api/v1/plugin-sources",                  Scope("plugin"), NoBody, api::plugins::sources_list,      "Plugins", "The custom plugin sources (marketplace registries)", None, Some("PluginSources")),
    route!("POST" "/api/v1/plugin-sources",                 Scope("plugin"), Json,   api::plugins::sources_add,       "Plugins", "Add a plugin source (stored as sent)", Some("PluginSource"), Some("PluginSources")),
    route!("PUT" "/api/v1/plugin-sources",                  Scope("plugin"), Json,   api::plugins::sources_replace,   "Plugins", "Replace the plugin sources (no sources: an empty list)", Some("PluginSourcesBody"), Some("PluginSources")),
    route!("DELETE" "/api/v1/plugin-sources/by-id",         Scope("plugin"), NoBody, api::plugins::sources_delete_query, "Plugins", "Remove the plugin sources whose id, url or name is ?source_id=", None, Some("PluginSources")),
    route!("DELETE" "/api/v1/plugin-sources/{source_id}",   Scope("plugin"), NoBody, api::plugins::sources_delete,    "Plugins", "Remove the plugin sources whose id, url or name is source_id (a URL with its / as %2F)", None, Some("PluginSources")),
    // Personas and folders.
    route!("GET" "/api/v1/personas",                            Scope("persona"), NoBody, api::personas::list,          "Personas", "List personas (?folder_id= for one folder, empty for the root)", None, Some("PersonaList")),
    route!("POST" "/api/v1/personas",                           Scope("persona"), Json,   api::personas::create,        "Personas", "Create a persona", Some("PersonaBody"), Some("PersonaCreated")),
    route!("GET" "/api/v1/personas/tree",                       Scope("persona"), NoBody, api::personas::tree,          "Personas", "Folders as a tree with their personas", None, Some("PersonaTree")),
    route!("POST" "/api/v1/personas/move",                      Scope("persona"), Json,   api::personas::move_persona,  "Personas", "Move a persona to a folder (null: the root)", Some("PersonaMove"), Some("MessageOnly")),
    route!("POST" "/api/v1/personas/reorder",                   Scope("persona"), Json,   api::personas::reorder,       "Personas", "Set the sort order of personas and folders", Some("PersonaReorder"), Some("MessageOnly")),
    route!("GET" "/api/v1/personas/by-id",                      Scope("persona"), NoBody, api::personas::get_query,     "Personas", "Get a persona (?persona_id=)", None, Some("Persona")),
    route!("PUT" "/api/v1/personas/by-id",                      Scope("persona"), Json,   api::personas::update_body,   "Personas", "Update a persona (persona_id in the body)", Some("PersonaUpdateById"), Some("MessageOnly")),
    route!("DELETE" "/api/v1/personas/by-id",                   Scope("persona"), NoBody, api::personas::delete_query,  "Personas", "Delete a persona (?persona_id=)", None, Some("MessageOnly")),
    route!("GET" "/api/v1/personas/{persona_id:path}",          Scope("persona"), NoBody, api::personas::get,           "Personas", "Get a persona", None, Some("Persona")),
    route!("PUT" "/api/v1/personas/{persona_id:path}",          Scope("persona"), Json,   api::personas::update,        "Personas", "Update a persona", Some("PersonaUpdate"), Some("MessageOnly")),
    route!("DELETE" "/api/v1/personas/{persona_id:path}",       Scope("persona"), NoBody, api::personas::delete,        "Personas", "Delete a persona", None, Some("MessageOnly")),
    route!("GET" "/api/v1/persona-folders",                     Scope("persona"), NoBody, api::personas::list_folders,  "Personas", "List folders (?parent_id=, default the root)", None, Some("FolderList")),
    route!("POST" "/api/v1/persona-folders",                    Scope("persona"), Json,   api::personas::create_folder, "Personas", "Create a folder", Some("FolderBody"), Some("FolderCreated")),
    route!("PUT" "/api/v1/persona-folders/{folder_id:path}",    Scope("persona"), Json,   api::personas::update_folder, "Personas", "Update a folder", Some("FolderUpdate"), Some("MessageOnly")),
    route!("DELETE" "/api/v1/persona-folders/{folder_id:path}", Scope("persona"), NoBody, api::personas::delete_folder, "Personas", "Delete a folder (its personas move to the root)", None, Some("MessageOnly")),
    // Configuration.
    route!("GET" "/api/v1/system-config",                       Scope("config"), NoBody, api::configs::get_system,     "Config", "The system config (secrets masked)", None, Some("SystemConfig")),
    route!("PUT" "/api/v1/system-config",                       Scope("config"), Json,   api::configs::put_system,     "Config", "Merge keys into the system config", Some("ConfigDocument"), Some("Empty")),
    route!("GET" "/api/v1/configs",                             Scope("config"), NoBody, api::configs::list_configs,   "Config", "Config profiles a chat may choose (default last)", None, Some("ConfigList")),
    route!("GET" "/api/v1/config-profiles",                     Scope("config"), NoBody, api::configs::list_profiles,  "Config", "List config profiles", None, Some("ProfileList")),
    route!("POST" "/api/v1/config-profiles",                    Scope("config"), Json,   api::configs::create_profile, "Config", "Create a config profile", Some("ProfileCreate"), Some("ProfileCreated")),
    route!("GET" "/api/v1/config-profiles/{config_id}",         Scope("config"), NoBody, api::configs::get_profile,    "Config", "Get a config profile (default: the system config)", None, Some("Profile")),
    route!("PUT" "/api/v1/config-profiles/{config_id}",         Scope("config"), Json,   api::configs::put_profile,    "Config", "Merge keys into a config profile", Some("ConfigDocument"), Some("Empty")),
    route!("PATCH" "/api/v1/config-profiles/{config_id}",       Scope("config"), Json,   api::configs::rename_profile, "Config", "Rename a config profile", Some("ProfileRename"), Some("Empty")),
    route!("DELETE" "/api/v1/config-profiles/{config_id}",      Scope("config"), NoBody, api::configs::delete_profile, "Config", "Delete a config profile and its routes", None, Some("Empty")),
    route!("GET" "/api/v1/config-routes",                       Scope("config"), NoBody, api::configs::list_routes,    "Config", "The UMO routing table", None, Some("Routing")),
    route!("PUT" "/api/v1/config-routes",                       Scope("config"), Json,   api::configs::replace_routes, "Config", "Replace the UMO routing table", Some("Routing"), Some("Routing")),
    route!("GET" "/api/v1/config-routes/{umo:path}",            Scope("config"), NoBody, api::configs::get_route,      "Config", "The settings that apply to a UMO: profile, provider, persona", None, Some("EffectiveRoute")),
    route!("PUT" "/api/v1/config-routes/{umo:path}",            Scope("config"), Json,   api::configs::put_route,      "Config", "Route a UMO to a profile (default removes the route)", Some("RouteBody"), Some("Empty")),
    route!("DELETE" "/api/v1/config-routes/{umo:path}",         Scope("config"), NoBody, api::configs::delete_route,   "Config", "Remove a UMO's route", None, Some("Empty")),
    // Chat and sessions.
    route!("POST" "/api/v1/chat",                          Scope("chat"), Json,   api::chat::chat,           "Chat", "Send a message; answers as an SSE stream (or JSON with Accept: application/json)", Some("ChatRequest"), None),
    route!("GET" "/api/v1/chat/sessions",                  Scope("chat"), NoBody, api::chat::sessions,       "Chat", "A username's sessions, newest first (?username=&page=&page_size=&platform_id=); the admin token may leave username out to list every session", None, Some("SessionPage")),
    route!("GET" "/api/v1/chat/sessions/{session_id}",     Scope("chat"), NoBody, api::chat::session,        "Chat", "A session and its messages, oldest first (?username=)", None, Some("SessionDetail")),
    route!("DELETE" "/api/v1/chat/sessions/{session_id}",  Scope("chat"), NoBody, api::chat::delete_session, "Chat", "Delete a session and its history (?username=)", None, Some("SessionId")),
    route!("GET" "/api/v1/chat/ws",                        Public,        NoBody, api::chat_ws::upgrade_required, "Chat", "The WebSocket chat (Upgrade: websocket; auth, messages and events in the chat guide); without an upgrade, 426", None, None),
    route!("GET" "/api/v1/chat/runs/{run_id}/stream",      Scope("chat"), NoBody, api::chat_ws::resume,       "Chat", "Resume a chat run's events (SSE with ids) from the start or after Last-Event-ID; only the caller that started the run", None, None),
    // Attachments.
    route!("POST" "/api/v1/file",                        Scope("file"), Upload, api::files::upload,         "Files", "Upload an attachment (multipart field `file`)", Some("Upload"), Some("Attachment")),
    route!("GET" "/api/v1/file",                         Scope("file"), NoBody, api::files::download_query, "Files", "Download an attachment (?attachment_id=); Range supported", None, None),
    route!("POST" "/api/v1/files",                       Scope("file"), Upload, api::files::upload,         "Files", "Upload an attachment (multipart field `file`)", Some("Upload"), Some("Attachment")),
    route!("GET" "/api/v1/files/content", Scope("file"), NoBody, api::files::download_by_name, "Files", "Download the newest attachment of a name (?filename=)", None, None),
    route!("POST" "/api/v1/files/upload/init",     Scope("file"), Json,   api::files::upload_init,     "Files", "Start a chunked upload: {filename, total_size, content_type} (AstrBot 4.29)", Some("UploadInit"), Some("UploadStarted")),
    route!("POST" "/api/v1/files/upload/chunk",    Scope("file"), Upload, api::files::upload_chunk,    "Files", "Send one chunk (multipart upload_id, chunk_index, file part chunk; body at most 2 MiB)", Some("UploadChunk"), Some("UploadChunkReceived")),
    route!("POST" "/api/v1/files/upload/status",   Scope("file"), Json,   api::files::upload_status,   "Files", "Which chunks of an upload arrived, and how long it lives", Some("UploadIdBody"), Some("UploadStatus")),
    route!("POST" "/api/v1/files/upload/complete", Scope("file"), Json,   api::files::upload_complete, "Files", "Finish a chunked upload: checked whole, it becomes an attachment", Some("UploadIdBody"), Some("Attachment")),
    route!("POST" "/api/v1/files/upload/abort",    Scope("file"), Json,   api::files::upload_abort,    "Files", "Drop a chunked upload and its received chunks", Some("UploadIdBody"), Some("Empty")),
    route!("GET" "/api/v1/files/tokens/{file_token}", Public,     NoBody, api::files::download_token,  "Files", "Download the file of a download token (no other credential; Range supported)", None, None),
    route!("POST" "/api/v1/files/{attachment_id}/token", Scope("file"), Json, api::files::issue_token, "Files", "A short-lived download token for an attachment (beyond AstrBot's Open API)", Some("FileTokenRequest"), Some("FileToken")),
    route!("GET" "/api/v1/files/{attachment_id}",        Scope("file"), NoBody, api::files::download,       "Files", "Download an attachment; Range supported", None, None),
    route!("GET" "/api/v1/files/{attachment_id}/content", Scope("file"), NoBody, api::files::download,      "Files", "Download an attachment; Range supported", None, None),
    route!("DELETE" "/api/v1/files/{attachment_id}",     Scope("file"), NoBody, api::files::delete,         "Files", "Delete an attachment and its bytes", None, Some("AttachmentId")),
    // The operator's routes (beyond AstrBot): logs, every session, knowledge collections, statistics.
    route!("GET" "/api/v1/logs/history",                  Admin, NoBody, api::operator::logs_history, "Operator", "The last log lines, oldest first (?limit=1..2000, default 100; ?level=error|warn|info|debug|trace: that level and more severe)", None, Some("LogHistory")),
    route!("GET" "/api/v1/logs/live",                     Admin, NoBody, api::operator::logs_live,    "Operator", "New log lines as server-sent events, one `data: {LogLine}` each (?level=)", None, None),
    route!("GET" "/api/v1/stats",                         Admin, NoBody, api::operator::stats,        "Operator", "Uptime, version, requests today by key, live streams, chat runs, upstream errors, webhook backlog", None, Some("Stats")),
    route!("GET" "/api/v1/kb/collections",                Admin, NoBody, api::kb::list,               "Operator", "Knowledge collections and their passage counts", None, Some("KbCollections")),
    route!("POST" "/api/v1/kb/collections/{name}/documents", Admin, Upload, api::kb::upload,          "Operator", "Replace a collection with uploaded Markdown, text or HTML files (multipart; optional base_url field)", Some("KbUpload"), Some("KbUploaded")),
    route!("DELETE" "/api/v1/kb/collections/{name}",      Admin, NoBody, api::kb::delete,             "Operator", "Remove a knowledge collection", None, Some("KbRemoved")),
    route!("POST" "/api/v1/auth/password",                Admin, Json,   api::admin::change_password, "Admin",    "Change the admin password (the current one is checked); signs out every admin token", Some("PasswordChange"), Some("PasswordChanged")),
    route!("POST" "/api/auth/login",                  Public,      Json,   api::admin::login,       "Admin",    "Log in as the administrator and get an admin token", Some("Login"), Some("LoginToken")),
    route!("POST" "/api/auth/logout",                 Public,      NoBody, api::admin::logout,      "Admin",    "End the admin token sent as Bearer", None, Some("Empty")),
    route!("GET" "/api/v1/openapi.json",              Public,      NoBody, api::meta::openapi,      "Docs",     "This OpenAPI document", None, None),
    route!("GET" "/api/v1/docs",                      Public,      NoBody, api::meta::reference,    "Docs",     "The interactive API reference", None, None),
    route!("GET" "/api/v1/docs/",                     Public,      NoBody, api::meta::reference,    "Docs",     "The interactive API reference (trailing slash)", None, None),
    route!("GET" "/healthz",                          Public,      NoBody, api::meta::healthz,      "Docs",     "Liveness: status, version, uptime", None, None),
    route!("GET" "/",                                 Public,      NoBody, api::meta::landing,      "Docs",     "The landing page", None, None),
    route!("GET" "/docs",                             Public,      NoBody, api::meta::guide_index,  "Docs",     "The index of the bundled guides", None, None),
    route!("GET" "/docs/{page}",                      Public,      NoBody, api::meta::guide,        "Docs",     "A bundled guide rendered as HTML", None, None),
    route!("GET" "/static/{file}",                    Public,      NoBody, api::meta::asset,        "Docs",     "A bundled static asset", None, None),
];

/// The outcome of matching a method and path against the table.
pub enum Match {
    Found(&'static Route, Vec<String>),
    /// The path exists with other methods.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

/// Finds the route for a request. Of the routes whose pattern matches the path, only the
/// most literal ones count (the most fixed segments): `/providers/by-id` over
/// `/providers/{id:path}`, `/providers/{id:path}/test` over `/providers/{id:path}`,
/// `/files/content` over `/files/{attachment_id}`, whatever the method. Otherwise
/// `PUT /providers/x/test` would update a provider `x/test` and `DELETE` would delete it,
/// where the client meant the `/test` route and should hear 405 with `Allow: POST`. An id
/// that makes such a path is reached with its `/` written `%2F` (one segment, never equal
/// to a literal) or with the `/by-id` routes.
pub fn find(method: &str, path: &str) -> Match {
    let literals = |route: &Route| route.path.split('/').filter(|s| !s.starts_with('{')).count();
    // One pass over the table; a path matches a handful of routes at most.
    let matching: Vec<(&'static Route, Vec<String>)> =
        ROUTES.iter().filter_map(|r| match_path(r.path, path).map(|params| (r, params))).collect();
    let Some(most) = matching.iter().map(|(r, _)| literals(r)).max() else { return Match::NotFound };
    let mut allowed = Vec::new();
    for (route, params) in matching.into_iter().filter(|(r, _)| literals(r) == most) {
        if route.method == method {
            return Match::Found(route, params);
        }
        if !allowed.contains(&route.method) {
            allowed.push(route.method);
        }
    }
    Match::WrongMethod(allowed)
}

/// Matches path segments literally, `{name}` captures one non-empty segment, `{name:path}`
/// captures one or more segments (AstrBot's ids may contain `/`) leaving the pattern's
/// remaining literal segments to match the end of the path. Captures are percent-decoded,
/// so `a%2Fb` is `a/b` as in AstrBot.
fn match_path(pattern: &str, path: &str) -> Option<Vec<String>> {
    if !pattern.contains(":path}") {
        // The common case, without allocating unless a segment is captured.
        let mut params = Vec::new();
        let (mut want, mut got) = (pattern.split('/'), path.split('/'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some(params),
                (Some(w), Some(g)) if w.starts_with('{') && !g.is_empty() => {
                    params.push(crate::http::percent_decode(g))
                }
                (Some(w), Some(g)) if w == g && !w.starts_with('{') => {}
                _ => return None,
            }
        }
    }
    let want: Vec<&str> = pattern.split('/').collect();
    let got: Vec<&str> = path.split('/').collect();
    let mut params = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < want.len() {
        let w = want[i];
        if w.starts_with('{') && w.ends_with(":path}") {
            let rest = want.len() - i - 1;
            if got.len() < j + 1 + rest {
                return None;
            }
            let end = got.len() - rest;
            let captured = &got[j..end];
            if captured.iter().any(|s| s.is_empty()) {
                return None;
            }
            params.push(crate::http::percent_decode(&captured.join("/")));
            i += 1;
            j = end;
            continue;
        }
        let g = *got.get(j)?;
        if w.starts_with('{') {
            if g.is_empty() {
                return None;
            }
            params.push(crate::http::percent_decode(g));
        } else if w != g {
            return None;
        }
        i += 1;
        j += 1;
    }
    (j == got.len()).then_some(params)
}

/// A route path as OpenAPI writes it: `{name:path}` becomes `{name}`.
pub fn openapi_path(path: &str) -> String {
    path.replace(":path}", "}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_and_captures() {
        match find("POST", "/api/v1/api-keys/abc%2Fd/revoke") {
            Match::Found(r, p) => {
                assert_eq!(r.path, "/api/v1/api-keys/{key_id}/revoke");
                assert_eq!(p, vec!["abc/d".to_owned()]);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(find("GET", "/api/v1/im/bots/"), Match::NotFound), "no trailing-slash match");
        assert!(matches!(find("DELETE", "/api/v1/api-keys/"), Match::NotFound));
        match find("POST", "/api/v1/im/bots") {
            Match::WrongMethod(m) => assert_eq!(m, vec!["GET"]),
            _ => panic!("expected 405"),
        }
        match find("PUT", "/api/v1/api-keys") {
            Match::WrongMethod(m) => assert_eq!(m, vec!["GET", "POST"]),
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn fixed_suffixes_shadow_catch_all_ids() {
        let wrong = |m, p| match find(m, p) {
            Match::WrongMethod(allowed) => allowed,
            Match::Found(r, _) => panic!("{m} {p} reached {} {}", r.method, r.path),
            Match::NotFound => panic!("{m} {p}: not found"),
        };
        assert_eq!(wrong("PUT", "/api/v1/providers/x/test"), vec!["POST"]);
        assert_eq!(wrong("DELETE", "/api/v1/providers/x/test"), vec!["POST"]);
        assert_eq!(wrong("GET", "/api/v1/providers/x/enabled"), vec!["PATCH"]);
        assert_eq!(wrong("PUT", "/api/v1/personas/tree"), vec!["GET"]);
        assert_eq!(wrong("PATCH", "/api/v1/providers/by-id"), vec!["GET", "PUT", "DELETE"]);
        match find("POST", "/api/v1/providers/x/y/test") {
            Match::Found(r, p) => {
                assert_eq!(r.path, "/api/v1/providers/{provider_id:path}/test");
                assert_eq!(p, vec!["x/y".to_owned()]);
            }
            _ => panic!("no match"),
        }
        // An id ending in a fixed suffix is still reachable with its `/` encoded.
        match find("DELETE", "/api/v1/providers/x%2Ftest") {
            Match::Found(r, p) => {
                assert_eq!(r.path, "/api/v1/providers/{provider_id:path}");
                assert_eq!(p, vec!["x/test".to_owned()]);
            }
            _ => panic!("no match"),
        }
        assert!(matches!(find("GET", "/api/v1/providers/openai/gpt-4o"), Match::Found(..)));
        assert_eq!(wrong("DELETE", "/api/v1/files/content"), vec!["GET"]);
    }

    #[test]
    fn path_captures_span_segments() {
        let m = |p, s| match_path(p, s);
        assert_eq!(m("/a/{id:path}", "/a/openai/gpt-4o"), Some(vec!["openai/gpt-4o".into()]));
        assert_eq!(m("/a/{id:path}/enabled", "/a/x/y/enabled"), Some(vec!["x/y".into()]));
        assert_eq!(m("/a/{id:path}/enabled", "/a/enabled"), None);
        assert_eq!(m("/a/{id:path}", "/a/x%2Fy"), Some(vec!["x/y".into()]));
        assert_eq!(m("/a/{id:path}", "/a/"), None);
        assert_eq!(m("/a/{id:path}", "/a/x//y"), None);
        assert_eq!(m("/a/{id}", "/a/x/y"), None);
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.path == b.path), "{} {} twice", a.method, a.path);
            }
        }
    }
}
