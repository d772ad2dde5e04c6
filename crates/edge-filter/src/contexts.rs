//! The proxy-wasm binding: Envoy calls these contexts; they call [`crate::filter`].
//!
//! One root context per worker VM holds the validated configuration and the metric ids; one HTTP
//! context per request holds what the body phase needs. Request headers are held (Envoy's
//! `allow_on_headers_stop_iteration`) until the body verdict, so a rejected request is never
//! partly forwarded.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::config::Config;
use crate::filter::{self, HeadersVerdict, Outcome, Reply, RequestHeaders, TENANT_HEADER};
use crate::limiter;
use crate::store::{SharedStore, StoreError};

/// How often idle rate-limit state is swept.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// proxy-wasm shared data: one store for every VM of the same `vm_id`, i.e. all worker threads.
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Ok(Some((value.unwrap_or_default(), cas))),
            Ok((_, None)) => Ok(None),
            Err(_) => Err(StoreError::Host),
        }
    }

    fn set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), version) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::Conflict),
            Err(_) => Err(StoreError::Host),
        }
    }
}

/// The host's clock in nanoseconds since the epoch, `None` if it cannot be read.
fn now_ns() -> Option<u64> {
    let now = hostcalls::get_current_time().ok()?;
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

/// What every request of one VM shares.
struct Shared {
    config: Config,
    /// Counter ids, `(class slot) * Outcome::ALL.len() + outcome`; the last slot is "no route".
    counters: Vec<u32>,
}

impl Shared {
    fn count(&self, class: Option<usize>, outcome: Outcome) {
        let slot = class.unwrap_or(self.config.classes.len());
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        if let Some(id) = self.counters.get(slot * Outcome::ALL.len() + index) {
            // A failed increment loses one count; it must not fail the request.
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Root {
    fn define_counters(config: &Config) -> Result<Vec<u32>, Status> {
        let slots = config
            .classes
            .iter()
            .map(|c| c.name.as_str())
            .chain(std::iter::once("none"));
        let mut ids = Vec::new();
        for class in slots {
            for outcome in Outcome::ALL {
                let name = format!("trunkguard.requests.{class}.{}", outcome.label());
                ids.push(hostcalls::define_metric(MetricType::Counter, &name)?);
            }
        }
        Ok(ids)
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            _ => {
                log::error!("trunkguard: the filter has no configuration");
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::error!("trunkguard: {e}");
                return false;
            }
        };
        let counters = match Self::define_counters(&config) {
            Ok(ids) => ids,
            Err(status) => {
                log::error!("trunkguard: could not define metrics: {status:?}");
                return false;
            }
        };
        if let Err(e) = limiter::initialise(&config, &HostStore) {
            log::error!("trunkguard: could not initialise rate-limit state: {e:?}");
            return false;
        }
        let _ = hostcalls::set_tick_period(SWEEP_PERIOD);
        log::info!(
            "trunkguard: {} routes, {} API keys, {} rate-limit classes",
            config.routes.len(),
            config.keys.len(),
            config.classes.len()
        );
        self.shared = Some(Rc::new(Shared { config, counters }));
        true
    }

    fn on_tick(&mut self) {
        if let (Some(shared), Some(now)) = (&self.shared, now_ns()) {
            limiter::sweep_idle(&shared.config, &HostStore, now);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            shared: self.shared.clone(),
            pending: None,
            buffered: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request.
struct Request {
    /// `None` only if the VM was never configured, in which case Envoy does not run the filter;
    /// handled anyway by refusing the request.
    shared: Option<Rc<Shared>>,
    /// The schema and class of a body still being buffered.
    pending: Option<(policy::BodySchema, usize)>,
    /// Bytes of body buffered so far.
    buffered: usize,
}

impl Request {
    fn reply(&mut self, shared: &Shared, reply: &Reply, class: Option<usize>) -> Action {
        self.pending = None;
        shared.count(class, reply.outcome);
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body))
            .is_err()
        {
            let _ = hostcalls::reset_http_request();
        }
        Action::Pause
    }

    /// Fail closed: the request is not forwarded.
    fn refuse(&mut self) -> Action {
        let _ = hostcalls::send_http_response(500, vec![], None);
        Action::Pause
    }

    /// Makes `tenant` the only `x-tenant-id` of the request (none when `None`), given how many
    /// the client sent. Every host call costs Envoy more than the work it does, so the usual
    /// cases take one: add when the client sent none, replace when it sent one.
    fn set_tenant(tenant: Option<&str>, sent: usize) -> Result<(), Status> {
        let map = MapType::HttpRequestHeaders;
        match (sent, tenant) {
            (0, None) => Ok(()),
            (0, Some(tenant)) => hostcalls::add_map_value(map, TENANT_HEADER, tenant),
            (1, tenant) => hostcalls::set_map_value(map, TENANT_HEADER, tenant),
            (_, tenant) => {
                hostcalls::remove_map_value(map, TENANT_HEADER)?;
                match tenant {
                    Some(tenant) => hostcalls::add_map_value(map, TENANT_HEADER, tenant),
                    None => Ok(()),
                }
            }
        }
    }

    fn finish_body(&mut self, shared: &Shared) -> Action {
        let Some((schema, class)) = self.pending.take() else {
            return Action::Continue;
        };
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, self.buffered) {
            Ok(body) => body.unwrap_or_default(),
            Err(_) => return self.refuse(),
        };
        match filter::on_body(schema, &body) {
            Ok(()) => {
                shared.count(Some(class), Outcome::Allowed);
                Action::Continue
            }
            Err(reply) => self.reply(shared, &reply, Some(class)),
        }
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.refuse();
        };
        // Values as bytes: the SDK's `get_map` unwraps each value as UTF-8 and so panics (and the
        // VM with it, for every later request) on a legal obs-text value such as `caf\xe9`.
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
        let (Ok(headers), Some(now)) = (headers, now_ns()) else {
            return self.refuse();
        };
        let headers = RequestHeaders(&headers);
        let sent = headers.count(TENANT_HEADER);
        let verdict = filter::on_headers(&shared.config, &headers, end_of_stream, now, &HostStore);
        match verdict {
            HeadersVerdict::Reject { reply, class } => self.reply(&shared, &reply, class),
            HeadersVerdict::Forward { tenant, class } => {
                if Self::set_tenant(Some(&tenant), sent).is_err() {
                    return self.refuse();
                }
                shared.count(Some(class), Outcome::Allowed);
                Action::Continue
            }
            HeadersVerdict::AwaitBody {
                tenant,
                class,
                schema,
            } => {
                if Self::set_tenant(Some(&tenant), sent).is_err() {
                    return self.refuse();
                }
                self.pending = Some((schema, class));
                Action::Pause
            }
            HeadersVerdict::Pass => {
                if Self::set_tenant(None, sent).is_err() {
                    return self.refuse();
                }
                shared.count(None, Outcome::Passed);
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((_, class)) = self.pending else {
            return Action::Continue;
        };
        let Some(shared) = self.shared.clone() else {
            return self.refuse();
        };
        self.buffered = body_size;
        if let Err(reply) = filter::check_buffered_size(&shared.config, body_size) {
            return self.reply(&shared, &reply, Some(class));
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_body(&shared)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.shared.clone() {
            Some(shared) if self.pending.is_some() => self.finish_body(&shared),
            _ => Action::Continue,
        }
    }
}
