//! `SimPortal`, the handle tests and the demo drive a portal with: frames, installation, CRM
//! changes with their events, uninstalling, token trouble, fault injection and counters.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};

use super::events::{self, Outgoing};
use super::frame::{Frame, FrameResponse};
use super::oauth::SCOPE;
use super::rest::{self, Fault, method_name};
use super::tokens::Holder;
use super::wire::{php_json, random_hex};
use super::{Binding, Changer, Delivery, Install, PlacementBinding, PortalState, Simulator};

/// One simulated portal. Clones are the same portal; after `move_domain` every handle sees the
/// new address.
#[derive(Clone)]
pub struct SimPortal {
    sim: Simulator,
    index: usize,
}

impl SimPortal {
    pub(crate) fn new(sim: Simulator, index: usize) -> SimPortal {
        SimPortal { sim, index }
    }

    fn read<R>(&self, f: impl FnOnce(&PortalState) -> R) -> R {
        f(&self.sim.world().portals[self.index])
    }

    fn write<R>(&self, f: impl FnOnce(&mut PortalState) -> R) -> R {
        f(&mut self.sim.world().portals[self.index])
    }

    pub fn member_id(&self) -> String {
        self.read(|p| p.member_id.clone())
    }

    /// `127.0.0.N:PORT`, as the portal reports itself in frames and events.
    pub fn domain(&self) -> String {
        self.read(PortalState::domain)
    }

    pub fn client_endpoint(&self) -> String {
        self.read(PortalState::client_endpoint)
    }

    /// The portal page that frames the app.
    pub fn page_url(&self) -> String {
        format!("http://{}/", self.domain())
    }

    pub fn application_token(&self) -> Option<String> {
        self.read(|p| p.application_token.clone())
    }

    /// What the portal would POST to open the app for `user_id`, with a fresh token pair.
    pub fn frame(&self, user_id: u64, placement: &str, placement_options: Value) -> Frame {
        let config = self.sim.config();
        let mut world = self.sim.world();
        let pair = world.tokens.issue_pair(
            Holder {
                portal: self.index,
                user_id,
            },
            config.access_token_ttl,
        );
        let portal = &world.portals[self.index];

        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("DOMAIN", &portal.domain());
        query.append_pair("PROTOCOL", "0");
        query.append_pair("LANG", "en");
        query.append_pair("APP_SID", &random_hex(16));

        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("AUTH_ID", &pair.access.access_token);
        form.append_pair("AUTH_EXPIRES", &pair.access.expires_in.to_string());
        form.append_pair("REFRESH_ID", &pair.refresh_token);
        form.append_pair("SERVER_ENDPOINT", &self.sim.server_endpoint());
        if let Some(token) = portal
            .application_token
            .as_ref()
            .filter(|_| config.send_application_token_in_frame)
        {
            form.append_pair("APPLICATION_TOKEN", token);
        }
        form.append_pair("APPLICATION_SCOPE", SCOPE);
        form.append_pair("member_id", &portal.member_id);
        form.append_pair("status", "L");
        form.append_pair("PLACEMENT", placement);
        // PHP encodes an empty options array as `[]`, not `{}`.
        form.append_pair(
            "PLACEMENT_OPTIONS",
            &php_json(&empty_as_php(placement_options)),
        );

        Frame {
            query: query.finish(),
            form: form.finish(),
            auth_id: pair.access.access_token,
            refresh_id: pair.refresh_token,
        }
    }

    /// Opens the installer: on a first install, or the first after an uninstall, the portal
    /// creates a new application token.
    pub async fn open_installer(&self, user_id: u64) -> anyhow::Result<FrameResponse> {
        let url = self.prepare_install(user_id)?;
        let frame = self.frame(user_id, "DEFAULT", json!({}));
        self.post_frame(&url, &frame).await
    }

    /// Opens the app's page (or a placement) for `user_id`.
    pub async fn open_app(
        &self,
        user_id: u64,
        placement: &str,
        placement_options: Value,
    ) -> anyhow::Result<FrameResponse> {
        let url = self.app_urls()?.1;
        let frame = self.frame(user_id, placement, placement_options);
        self.post_frame(&url, &frame).await
    }

    /// What `BX24.installFinish()` does: the app counts as installed and ONAPPINSTALL goes to
    /// its handlers. Calling it again on an installed app changes nothing.
    pub async fn finish_install(&self) -> anyhow::Result<Vec<Delivery>> {
        let outgoing = {
            let mut world = self.sim.world();
            match world.portals[self.index].install {
                Install::Installed => return Ok(Vec::new()),
                Install::Never | Install::Removed => {
                    bail!("the installer was not opened on this portal")
                }
                Install::Pending => {}
            }
            world.portals[self.index].install = Install::Installed;
            events::plan_install(&self.sim, &mut world, self.index)
        };
        Ok(events::deliver(&self.sim, outgoing).await)
    }

    /// POSTs a frame, possibly tampered with, to any URL.
    pub async fn post_frame(&self, url: &str, frame: &Frame) -> anyhow::Result<FrameResponse> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let response = self
            .sim
            .http()
            .post(format!("{url}{separator}{}", frame.query))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(frame.form.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("posting the frame to {url}"))?;

        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .context("reading the app's answer to the frame")?;
        Ok(FrameResponse {
            status,
            headers,
            body,
        })
    }

    pub fn add_type(&self, entity_type_id: u64, title: &str) {
        self.write(|p| p.crm.add_type(entity_type_id, title));
    }

    pub fn add_user(&self, user_id: u64, name: &str, last_name: &str) {
        self.write(|p| p.crm.add_user(user_id, name, last_name));
    }

    pub fn add_stage(&self, entity_type_id: u64, category_id: u64, status_id: &str, name: &str) {
        self.write(|p| {
            p.crm
                .add_stage(entity_type_id, category_id, status_id, name)
        });
    }

    /// Creates an item and sends ONCRMDYNAMICITEMADD.
    pub async fn create_item(
        &self,
        entity_type_id: u64,
        fields: Value,
        by: Changer,
    ) -> anyhow::Result<(u64, Vec<Delivery>)> {
        let (id, outgoing) = {
            let mut world = self.sim.world();
            let id = world.portals[self.index]
                .crm
                .create(entity_type_id, &fields, by)?;
            let event = "ONCRMDYNAMICITEMADD";
            (
                id,
                events::plan_item_event(
                    &self.sim,
                    &mut world,
                    self.index,
                    event,
                    entity_type_id,
                    id,
                    by,
                ),
            )
        };
        Ok((id, events::deliver(&self.sim, outgoing).await))
    }

    /// Merges `changes` into the item and sends ONCRMDYNAMICITEMUPDATE.
    pub async fn update_item(
        &self,
        entity_type_id: u64,
        id: u64,
        changes: Value,
        by: Changer,
    ) -> anyhow::Result<Vec<Delivery>> {
        let outgoing = {
            let mut world = self.sim.world();
            world.portals[self.index]
                .crm
                .update(entity_type_id, id, &changes, by)?;
            let event = "ONCRMDYNAMICITEMUPDATE";
            events::plan_item_event(
                &self.sim,
                &mut world,
                self.index,
                event,
                entity_type_id,
                id,
                by,
            )
        };
        Ok(events::deliver(&self.sim, outgoing).await)
    }

    /// Deletes the item and sends ONCRMDYNAMICITEMDELETE.
    pub async fn delete_item(
        &self,
        entity_type_id: u64,
        id: u64,
        by: Changer,
    ) -> anyhow::Result<Vec<Delivery>> {
        let outgoing = {
            let mut world = self.sim.world();
            world.portals[self.index].crm.delete(entity_type_id, id)?;
            let event = "ONCRMDYNAMICITEMDELETE";
            events::plan_item_event(
                &self.sim,
                &mut world,
                self.index,
                event,
                entity_type_id,
                id,
                by,
            )
        };
        Ok(events::deliver(&self.sim, outgoing).await)
    }

    /// Sends an item-shaped event without changing anything (duplicates, bursts, lies).
    pub async fn send_event(
        &self,
        event: &str,
        entity_type_id: u64,
        id: u64,
        by: Changer,
    ) -> anyhow::Result<Vec<Delivery>> {
        let outgoing = {
            let mut world = self.sim.world();
            events::plan_item_event(
                &self.sim,
                &mut world,
                self.index,
                event,
                entity_type_id,
                id,
                by,
            )
        };
        Ok(events::deliver(&self.sim, outgoing).await)
    }

    /// Removes the app. Bindings, placements and every token of the app on this portal go
    /// first, then ONAPPUNINSTALL (without tokens) goes to the handlers that were bound for it,
    /// so a handler that calls REST from there finds its tokens dead, as on the platform.
    pub async fn uninstall(&self, clean: bool) -> anyhow::Result<Vec<Delivery>> {
        let outgoing: Vec<Outgoing> = {
            let mut world = self.sim.world();
            let install = world.portals[self.index].install;
            if matches!(install, Install::Never | Install::Removed) {
                bail!("the app is not installed on this portal");
            }
            let outgoing = if install == Install::Installed {
                events::plan_uninstall(&self.sim, &world, self.index, clean)
            } else {
                Vec::new()
            };

            world.tokens.kill_portal(self.index);
            let portal = &mut world.portals[self.index];
            portal.hooks.clear();
            portal.install = Install::Removed;
            outgoing
        };
        Ok(events::deliver(&self.sim, outgoing).await)
    }

    pub fn bindings(&self) -> Vec<Binding> {
        self.read(|p| p.hooks.bindings())
    }

    pub fn placements(&self) -> Vec<PlacementBinding> {
        self.read(|p| p.hooks.placements())
    }

    /// Every access token issued so far now answers 401 `expired_token`.
    pub fn expire_access_tokens(&self) {
        self.sim.world().tokens.expire_access(self.index);
    }

    /// Every refresh token issued so far now answers `invalid_grant`.
    pub fn revoke_refresh_tokens(&self) {
        self.sim.world().tokens.revoke_refresh(self.index);
    }

    pub fn set_payment_required(&self, yes: bool) {
        self.write(|p| p.payment_required = yes);
    }

    /// The next `times` calls of `method` (inside batch too, unless `method` is `batch`)
    /// answer `status` with `error`. Replaces an earlier fault for the same method.
    pub fn fail_next(&self, method: &str, times: usize, status: u16, error: &str) {
        let fault = Fault {
            remaining: times,
            status,
            error: error.to_string(),
        };
        self.write(|p| p.faults.insert(method_name(method), fault));
    }

    /// The portal moves to a new address with a new server; the old address keeps answering,
    /// with a 302 to the same path on the new one. Returns a handle (the same portal).
    pub fn move_domain(&self) -> anyhow::Result<SimPortal> {
        let listener = self.sim.bind_loopback()?;
        let addr = listener.local_addr()?;
        if addr == self.read(|p| p.addr) {
            return Err(anyhow!("the new address equals the old one"));
        }

        self.sim.serve(
            listener,
            rest::portal_router(self.sim.clone(), self.index, addr),
        )?;
        self.write(|p| p.addr = addr);
        Ok(self.clone())
    }

    /// HTTP requests to `/rest/{method}` (refused ones included; a batch counts as `batch`).
    pub fn rest_calls(&self, method: &str) -> usize {
        let method = method_name(method);
        self.read(|p| p.stats.rest_calls.get(&method).copied().unwrap_or(0))
    }

    /// Calls of `method` made inside batch.
    pub fn sub_calls(&self, method: &str) -> usize {
        let method = method_name(method);
        self.read(|p| p.stats.sub_calls.get(&method).copied().unwrap_or(0))
    }

    /// All HTTP requests to `/rest/` at the current address, refused ones included.
    pub fn total_rest_requests(&self) -> usize {
        self.read(|p| p.stats.total)
    }

    pub fn rate_limited_count(&self) -> usize {
        self.read(|p| p.stats.rate_limited)
    }

    /// Requests answered with a 302 at an old address after `move_domain`.
    pub fn redirected_count(&self) -> usize {
        self.read(|p| p.stats.redirected)
    }

    /// The BX24 calls (`{"b24sim": "resize", ...}`, `openPath`, `installFinish`, ...) that
    /// the framed app made on the portal page in a browser, oldest first.
    pub fn page_events(&self) -> Vec<Value> {
        self.read(|p| p.page_events.clone())
    }

    /// Whether `installFinish` has run (and no uninstall since).
    pub fn is_installed(&self) -> bool {
        self.read(|p| p.install == Install::Installed)
    }

    /// Marks the installer as opened and returns its URL.
    fn prepare_install(&self, user_id: u64) -> anyhow::Result<String> {
        let install_url = self.app_urls()?.0;
        self.write(|p| {
            if matches!(p.install, Install::Never | Install::Removed) {
                p.application_token = Some(random_hex(16));
                p.install = Install::Pending;
            }
            p.installer = user_id;
        });
        Ok(install_url)
    }

    /// (install_url, app_url) of the registered app.
    pub(crate) fn app_urls(&self) -> anyhow::Result<(String, String)> {
        let world = self.sim.world();
        let app = world
            .app
            .as_ref()
            .context("no app registered with the simulator")?;
        Ok((app.install_url.clone(), app.app_url.clone()))
    }

    /// The page shows the installer until `installFinish`, then the app.
    pub(crate) fn page_target(&self, user_id: u64) -> anyhow::Result<String> {
        if self.is_installed() {
            return Ok(self.app_urls()?.1);
        }
        self.prepare_install(user_id)
    }
}

/// An empty JSON object becomes PHP's empty array.
fn empty_as_php(options: Value) -> Value {
    match options {
        Value::Object(map) if map.is_empty() => json!([]),
        Value::Null => json!([]),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_options_are_sent_as_php_writes_them() {
        assert_eq!(php_json(&empty_as_php(json!({}))), "[]");
        assert_eq!(
            php_json(&empty_as_php(json!({"ID": "24"}))),
            r#"{"ID":"24"}"#
        );
    }
}
