//! Keeping one agent registered with the PBX: REGISTER with digest, refresh at 75% of the
//! granted expiry, back-off retries after timeouts and 5xx, and `Expires: 0` when the agent
//! unregisters or its session goes away.

use std::time::Duration;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::registration::{Registration, backoff_interval, refresh_interval};
use rsipstack::sip::Uri;
use rsipstack::sip::typed::Contact;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Inboxes;

/// What the session learns about its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationEvent {
    /// Accepted for `expires` seconds.
    Registered {
        /// Seconds granted.
        expires: u32,
    },
    /// Refused or unreachable.
    Failed {
        /// The final status, when the PBX answered.
        status: Option<u16>,
        /// Reason phrase or explanation.
        reason: String,
        /// Whether callgate keeps trying.
        retrying: bool,
    },
    /// The binding was removed at the agent's request.
    Unregistered,
}

/// Receives a registration's events.
pub type RegistrationSink = Box<dyn FnMut(RegistrationEvent) + Send>;

/// What to register.
#[derive(Clone)]
pub struct RegisterRequest {
    /// The agent's extension (AOR user and digest username).
    pub extension: String,
    /// The agent's SIP password.
    pub password: String,
    /// Digest username when it differs from the extension (token mode's credentials).
    pub auth_user: Option<String>,
    /// The Contact user part that routes inbound INVITEs to this session.
    pub contact_user: String,
    /// Expiry asked for, in seconds.
    pub expires: u32,
}

/// Keeps the registration alive; dropping it unregisters (`Expires: 0`) and stops routing
/// inbound calls to the session.
pub struct RegistrationHandle {
    control: Option<mpsc::UnboundedSender<Control>>,
    contact_user: String,
    inboxes: Inboxes,
}

/// What the session tells its registration task.
enum Control {
    Unregister,
    Credentials {
        auth_user: Option<String>,
        password: String,
    },
}

impl RegistrationHandle {
    /// Unregisters now; the `Unregistered` event follows.
    pub fn unregister(mut self) {
        if let Some(control) = self.control.take() {
            let _ = control.send(Control::Unregister);
        }
    }

    /// New digest credentials (a token refresh looked them up again: the PBX password may
    /// have been rotated). The next REGISTER uses them; a registration the PBX refused
    /// retries with them at once instead of waiting for the agent to register again.
    pub fn update_credentials(&self, auth_user: Option<String>, password: String) {
        if let Some(control) = &self.control {
            let _ = control.send(Control::Credentials {
                auth_user,
                password,
            });
        }
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        if let Ok(mut inboxes) = self.inboxes.lock() {
            inboxes.remove(&self.contact_user);
        }
        // Dropping the sender also ends the task with an unregister.
        self.control.take();
    }
}

/// How the wait between two REGISTERs ended.
enum WaitEnd {
    /// Time to refresh or retry (the timer, a proxy change, new credentials).
    RegisterNow,
    /// The agent unregistered (`true`) or its session went away (`false`).
    Stop(bool),
}

pub(super) struct Target {
    pub server: Uri,
    /// Every REGISTER goes to the active proxy; a change of it re-registers at once.
    pub proxies: std::sync::Arc<super::proxy::ProxyHealth>,
    pub contact: Uri,
}

pub(super) fn start(
    endpoint: rsipstack::transaction::endpoint::EndpointInnerRef,
    target: Target,
    request: RegisterRequest,
    mut events: RegistrationSink,
    inboxes: Inboxes,
    registered_count: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> RegistrationHandle {
    use std::sync::atomic::Ordering;
    let (control, mut controls) = mpsc::unbounded_channel::<Control>();
    let contact_user = request.contact_user.clone();
    tokio::spawn(async move {
        let credential = Credential {
            username: request.extension.clone(),
            password: request.password.clone(),
            realm: None,
            auth_username: request.auth_user.clone(),
        };
        let mut registration = Registration::new(endpoint, Some(credential));
        let mut proxy_changes = target.proxies.subscribe();
        registration.contact = Some(Contact {
            display_name: None,
            uri: target.contact.clone(),
            params: vec![],
        });
        let mut failures = 0u32;
        let mut registered = false;
        loop {
            proxy_changes.mark_unchanged();
            registration.outbound_proxy = Some(target.proxies.active());
            // Boxed: rsipstack's REGISTER future is several KiB and would otherwise size this
            // task's state for its whole idle life (heaptrack: 8.4 KiB per registered agent).
            let wait =
                match Box::pin(registration.register(target.server.clone(), Some(request.expires)))
                    .await
                {
                    Ok(response) if (200..300).contains(&response.status_code.code()) => {
                        failures = 0;
                        if !registered {
                            registered_count.fetch_add(1, Ordering::Relaxed);
                        }
                        registered = true;
                        let expires = registration.expires();
                        info!(agent = %request.extension, expires, "registered");
                        events(RegistrationEvent::Registered { expires });
                        Some(refresh_interval(expires))
                    }
                    Ok(response) => {
                        let status = response.status_code.code();
                        let retrying = status == 408 || status >= 500;
                        let reason = response
                            .wire_reason
                            .clone()
                            .unwrap_or_else(|| response.status_code.text().to_string());
                        warn!(agent = %request.extension, status, "registration refused");
                        events(RegistrationEvent::Failed {
                            status: Some(status),
                            reason,
                            retrying,
                        });
                        if registered {
                            registered_count.fetch_sub(1, Ordering::Relaxed);
                        }
                        registered = false;
                        failures += 1;
                        retrying.then(|| backoff_interval(failures).max(Duration::from_secs(5)))
                    }
                    Err(e) => {
                        debug!(error = %e, "REGISTER failed");
                        events(RegistrationEvent::Failed {
                            status: None,
                            reason: format!("the PBX could not be reached: {e}"),
                            retrying: true,
                        });
                        if registered {
                            registered_count.fetch_sub(1, Ordering::Relaxed);
                        }
                        registered = false;
                        failures += 1;
                        Some(backoff_interval(failures).max(Duration::from_secs(5)))
                    }
                };
            // `None`: a final refusal; stay idle until the agent unregisters, leaves or gets
            // new credentials.
            let deadline = wait.map(|wait| tokio::time::Instant::now() + wait);
            let end = loop {
                let control = match deadline {
                    Some(deadline) => tokio::select! {
                        () = tokio::time::sleep_until(deadline) => break WaitEnd::RegisterNow,
                        // The primary went silent or came back: register through the active
                        // one now.
                        Ok(()) = proxy_changes.changed() => {
                            info!(agent = %request.extension, proxy = %target.proxies.active(), "re-registering through the active proxy");
                            break WaitEnd::RegisterNow;
                        }
                        control = controls.recv() => control,
                    },
                    None => controls.recv().await,
                };
                match control {
                    Some(Control::Credentials {
                        auth_user,
                        password,
                    }) => {
                        let changed = registration
                            .credential
                            .as_ref()
                            .is_none_or(|c| c.password != password || c.auth_username != auth_user);
                        registration.credential = Some(Credential {
                            username: request.extension.clone(),
                            password,
                            realm: None,
                            auth_username: auth_user,
                        });
                        if changed && !registered {
                            info!(agent = %request.extension, "registering again with refreshed credentials");
                            failures = 0;
                            break WaitEnd::RegisterNow;
                        }
                        // Registered: the next refresh (and any challenge) uses them.
                    }
                    Some(Control::Unregister) => break WaitEnd::Stop(true),
                    None => break WaitEnd::Stop(false),
                }
            };
            let stop_requested = match end {
                WaitEnd::RegisterNow => continue,
                WaitEnd::Stop(requested) => requested,
            };
            if registered {
                registered_count.fetch_sub(1, Ordering::Relaxed);
                if let Err(e) =
                    Box::pin(registration.register(target.server.clone(), Some(0))).await
                {
                    debug!(error = %e, "unregister failed");
                }
                info!(agent = %request.extension, "unregistered");
            }
            if stop_requested {
                events(RegistrationEvent::Unregistered);
            }
            break;
        }
    });
    RegistrationHandle {
        control: Some(control),
        contact_user,
        inboxes,
    }
}
