//! Plugin sources and the marketplace (INTERFACE: the helper owning this file fills it):
//! the custom sources list, and the registry JSON fetched from a source with a cache
//! (`DIR/plugins.json`, `DIR/plugins_custom_<8 hex>.json`), answered from the cache offline.
