//! The platform client: wire formats, the OAuth servers and portal REST.

pub mod budget;
pub mod oauth;
pub mod portal;
pub mod rest;
pub mod wire;
