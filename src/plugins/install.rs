//! Installing a plugin (INTERFACE: the helper owning this file fills it): from a URL
//! (`POST /api/v1/plugins/install/url`: a zip or tar.gz downloaded with caps) or an
//! upload, unpacked through `archive` into a staging folder, one top folder stripped,
//! `metadata.yaml` required in the root, renamed into `DIR/plugins/<name>` only when
//! everything passed.
