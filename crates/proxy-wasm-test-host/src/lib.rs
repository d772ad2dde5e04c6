//! A proxy-wasm host (ABI 0.2.1) on wasmtime, for unit-testing proxy-wasm filters without Envoy.
//!
//! It implements what an HTTP filter needs: plugin configuration, request headers and body,
//! local responses, shared data with compare-and-swap, counters, the clock, ticks and logs.
//! Several [`Vm`]s made by one [`TestHost`] share the shared data and the metrics, as Envoy's
//! worker threads' VMs do, so cross-worker behaviour is testable. Any other import traps when
//! called, so a filter that starts depending on more of the ABI fails loudly here.
//!
//! The request model follows Envoy: a filter that pauses on headers has its body delivered in
//! chunks, each call seeing the size of everything buffered so far; a request is forwarded when
//! the last callback continues, and held otherwise.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Caller, Engine, Extern, Instance, Linker, Memory, Module, Store, TypedFunc};

pub use wasmtime::Result;

/// The root context id every VM uses.
const ROOT_CONTEXT: i32 = 1;

// proxy-wasm ABI 0.2.1 codes.
const STATUS_OK: i32 = 0;
const STATUS_NOT_FOUND: i32 = 1;
const STATUS_BAD_ARGUMENT: i32 = 2;
const STATUS_CAS_MISMATCH: i32 = 8;
const BUFFER_HTTP_REQUEST_BODY: i32 = 0;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;
const MAP_HTTP_REQUEST_HEADERS: i32 = 0;
const ACTION_CONTINUE: i32 = 0;

/// The WASI preview 1 functions Envoy's Wasm host provides (proxy-wasm-cpp-host's
/// `FOR_ALL_WASI_FUNCTIONS`); a filter importing any other fails to load in Envoy.
pub const ENVOY_WASI_FUNCTIONS: [&str; 15] = [
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

/// What all VMs of one host share: shared data, metrics and the clock.
#[derive(Default)]
struct Shared {
    data: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    metrics: Mutex<Vec<(String, i64)>>,
    clock_ns: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A compiled filter module and the state its VMs share.
pub struct TestHost {
    engine: Engine,
    module: Module,
    shared: Arc<Shared>,
}

/// A response the filter sent instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The HTTP status.
    pub status: u32,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// The request went upstream with these headers and this body.
    Forwarded {
        /// Request headers after the filter's edits (values are bytes, as in HTTP).
        headers: Vec<(String, Vec<u8>)>,
        /// The request body.
        body: Vec<u8>,
    },
    /// The filter answered locally.
    Responded(LocalResponse),
    /// The filter neither forwarded nor answered.
    Held,
}

#[derive(Default)]
struct Request {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    local_response: Option<LocalResponse>,
}

/// The host side of one VM.
struct VmState {
    shared: Arc<Shared>,
    plugin_configuration: Vec<u8>,
    request: Request,
    logs: Vec<String>,
    tick_period_ms: u32,
}

/// One VM: an instance of the module with its root context configured.
pub struct Vm {
    store: Store<VmState>,
    instance: Instance,
    next_context: i32,
}

impl TestHost {
    /// Compiles the module at `path`.
    pub fn new(path: &Path) -> Result<Self> {
        let engine = Engine::default();
        let module = Module::from_file(&engine, path)?;
        Ok(Self {
            engine,
            module,
            shared: Arc::default(),
        })
    }

    /// Another host for the same compiled module, with its own shared data, metrics and clock
    /// (compiling is the slow part; state is per test).
    pub fn fresh(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            module: self.module.clone(),
            shared: Arc::default(),
        }
    }

    /// The module's imports as `(module, name)` pairs.
    pub fn imports(&self) -> Vec<(String, String)> {
        self.module
            .imports()
            .map(|i| (i.module().to_owned(), i.name().to_owned()))
            .collect()
    }

    /// Sets the clock every VM reads, in nanoseconds since the epoch.
    pub fn set_time_ns(&self, now: u64) {
        self.shared.clock_ns.store(now, Ordering::SeqCst);
    }

    /// The value of counter `name`, if the filter defined it.
    pub fn metric(&self, name: &str) -> Option<i64> {
        lock(&self.shared.metrics)
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// Every metric name defined so far.
    pub fn metric_names(&self) -> Vec<String> {
        lock(&self.shared.metrics)
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// A copy of the shared data: key -> (value, version).
    pub fn shared_data(&self) -> HashMap<String, (Vec<u8>, u32)> {
        lock(&self.shared.data).clone()
    }

    /// Starts a VM and configures its root context with `configuration`. `Ok(Err(logs))` when
    /// the filter refused the configuration (`on_configure` returned false).
    pub fn start_vm(&self, configuration: &[u8]) -> Result<std::result::Result<Vm, Vec<String>>> {
        let state = VmState {
            shared: Arc::clone(&self.shared),
            plugin_configuration: configuration.to_vec(),
            request: Request::default(),
            logs: Vec::new(),
            tick_period_ms: 0,
        };
        let mut store = Store::new(&self.engine, state);
        let mut linker = Linker::new(&self.engine);
        define_host_functions(&mut linker)?;
        linker.define_unknown_imports_as_traps(&self.module)?;
        let instance = linker.instantiate(&mut store, &self.module)?;
        let mut vm = Vm {
            store,
            instance,
            next_context: ROOT_CONTEXT + 1,
        };
        vm.call::<(), ()>("_initialize", ())?;
        vm.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_CONTEXT, 0))?;
        vm.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_CONTEXT, 0))?;
        let size = i32::try_from(configuration.len())?;
        let configured = vm.call::<(i32, i32), i32>("proxy_on_configure", (ROOT_CONTEXT, size))?;
        if configured == 0 {
            return Ok(Err(vm.store.data().logs.clone()));
        }
        Ok(Ok(vm))
    }
}

impl Vm {
    fn call<P, R>(&mut self, name: &str, params: P) -> Result<R>
    where
        P: wasmtime::WasmParams,
        R: wasmtime::WasmResults,
    {
        let func: TypedFunc<P, R> = self.instance.get_typed_func(&mut self.store, name)?;
        func.call(&mut self.store, params)
    }

    /// Everything the filter logged.
    pub fn logs(&self) -> &[String] {
        &self.store.data().logs
    }

    /// The tick period the filter asked for, in milliseconds (0: none).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Delivers one tick to the root context.
    pub fn tick(&mut self) -> Result<()> {
        self.call::<i32, ()>("proxy_on_tick", ROOT_CONTEXT)
    }

    /// Runs one request through the filter. `headers` includes the pseudo-headers (`:method`,
    /// `:path`); a body, when given, is delivered in `chunks` parts.
    pub fn request<V: AsRef<[u8]>>(
        &mut self,
        headers: &[(&str, V)],
        body: Option<&[u8]>,
        chunks: usize,
    ) -> Result<Exchange> {
        let context = self.next_context;
        self.next_context += 1;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (context, ROOT_CONTEXT))?;
        self.store.data_mut().request = Request {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_ref().to_vec()))
                .collect(),
            ..Request::default()
        };
        let count = i32::try_from(headers.len())?;
        let mut action = self.call::<(i32, i32, i32), i32>(
            "proxy_on_request_headers",
            (context, count, i32::from(body.is_none())),
        )?;
        if let (Some(body), true) = (body, action != ACTION_CONTINUE) {
            let chunk_size = body.len().div_ceil(chunks.max(1)).max(1);
            let mut delivered = 0;
            for chunk in body.chunks(chunk_size) {
                if self.store.data().request.local_response.is_some() {
                    break;
                }
                delivered += chunk.len();
                self.store.data_mut().request.body.extend_from_slice(chunk);
                let end = i32::from(delivered == body.len());
                let size = i32::try_from(self.store.data().request.body.len())?;
                action = self.call("proxy_on_request_body", (context, size, end))?;
                if action == ACTION_CONTINUE {
                    break;
                }
            }
        }
        let request = std::mem::take(&mut self.store.data_mut().request);
        self.call::<i32, i32>("proxy_on_done", context)?;
        self.call::<i32, ()>("proxy_on_delete", context)?;
        Ok(match request.local_response {
            Some(response) => Exchange::Responded(response),
            None if action == ACTION_CONTINUE => Exchange::Forwarded {
                headers: request.headers,
                body: body.map(<[u8]>::to_vec).unwrap_or_default(),
            },
            None => Exchange::Held,
        })
    }
}

fn memory(caller: &mut Caller<'_, VmState>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(wasmtime::Error::msg("the module exports no memory")),
    }
}

fn read(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let memory = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg("guest pointer out of bounds"))
}

fn read_str(caller: &mut Caller<'_, VmState>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    memory.write(caller, ptr as u32 as usize, bytes)?;
    Ok(())
}

/// Copies `bytes` into memory the guest allocates, and writes its address and size to the
/// guest's return pointers. An empty value is returned as a null pointer, as Envoy does.
fn hand_over(
    caller: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<()> {
    let address = if bytes.is_empty() {
        0
    } else {
        let allocate = match caller.get_export("proxy_on_memory_allocate") {
            Some(Extern::Func(f)) => f.typed::<i32, i32>(&caller)?,
            _ => return Err(wasmtime::Error::msg("the module exports no allocator")),
        };
        let address = allocate.call(&mut *caller, i32::try_from(bytes.len())?)?;
        write(caller, address, bytes)?;
        address
    };
    write(caller, ret_ptr, &address.to_le_bytes())?;
    write(caller, ret_size, &i32::try_from(bytes.len())?.to_le_bytes())
}

/// proxy-wasm's header map encoding: count, (key length, value length) pairs, then each key and
/// value followed by a NUL.
fn encode_map(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

fn decode_map(bytes: &[u8]) -> Vec<(String, String)> {
    let word = |at: usize| -> usize {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    };
    let count = word(0);
    let mut text = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let (name_len, value_len) = (word(4 + i * 8), word(8 + i * 8));
        let take = |from: usize, len: usize| {
            String::from_utf8_lossy(bytes.get(from..from + len).unwrap_or_default()).into_owned()
        };
        let name = take(text, name_len);
        text += name_len + 1;
        let value = take(text, value_len);
        text += value_len + 1;
        pairs.push((name, value));
    }
    pairs
}

fn define_host_functions(linker: &mut Linker<VmState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut c: Caller<'_, VmState>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let message = read_str(&mut c, ptr, len)?;
            c.data_mut().logs.push(format!("[{level}] {message}"));
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: Caller<'_, VmState>, ret: i32| -> Result<i32> {
            let now = c.data().shared.clock_ns.load(Ordering::SeqCst);
            write(&mut c, ret, &now.to_le_bytes())?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: Caller<'_, VmState>, ms: i32| -> i32 {
            c.data_mut().tick_period_ms = ms as u32;
            STATUS_OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_, VmState>,
         kind: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            let buffer = match kind {
                BUFFER_PLUGIN_CONFIGURATION => c.data().plugin_configuration.clone(),
                BUFFER_HTTP_REQUEST_BODY => c.data().request.body.clone(),
                _ => return Ok(STATUS_BAD_ARGUMENT),
            };
            let start = (start as u32 as usize).min(buffer.len());
            let end = start.saturating_add(max as u32 as usize).min(buffer.len());
            hand_over(&mut c, &buffer[start..end], ret_ptr, ret_size)?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmState>, map: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            if map != MAP_HTTP_REQUEST_HEADERS {
                return Ok(STATUS_BAD_ARGUMENT);
            }
            let encoded = encode_map(&c.data().request.headers);
            hand_over(&mut c, &encoded, ret_ptr, ret_size)?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmState>,
         map: i32,
         key_ptr: i32,
         key_len: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            if map != MAP_HTTP_REQUEST_HEADERS {
                return Ok(STATUS_BAD_ARGUMENT);
            }
            let key = read_str(&mut c, key_ptr, key_len)?;
            let value = c
                .data()
                .request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&key))
                .map(|(_, v)| v.clone());
            match value {
                Some(value) => {
                    hand_over(&mut c, &value, ret_ptr, ret_size)?;
                    Ok(STATUS_OK)
                }
                None => Ok(STATUS_NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, VmState>, map: i32, key_ptr: i32, key_len: i32| -> Result<i32> {
            if map != MAP_HTTP_REQUEST_HEADERS {
                return Ok(STATUS_BAD_ARGUMENT);
            }
            let key = read_str(&mut c, key_ptr, key_len)?;
            c.data_mut()
                .request
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case(&key));
            Ok(STATUS_OK)
        },
    )?;
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut c: Caller<'_, VmState>,
                  map: i32,
                  key_ptr: i32,
                  key_len: i32,
                  value_ptr: i32,
                  value_len: i32|
                  -> Result<i32> {
                if map != MAP_HTTP_REQUEST_HEADERS {
                    return Ok(STATUS_BAD_ARGUMENT);
                }
                let key = read_str(&mut c, key_ptr, key_len)?;
                let value = read(&mut c, value_ptr, value_len)?;
                let headers = &mut c.data_mut().request.headers;
                if replace {
                    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&key));
                }
                headers.push((key, value));
                Ok(STATUS_OK)
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_, VmState>,
         status: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> Result<i32> {
            let body = read(&mut c, body_ptr, body_len)?;
            let headers = decode_map(&read(&mut c, headers_ptr, headers_len)?);
            c.data_mut().request.local_response = Some(LocalResponse {
                status: status as u32,
                headers,
                body,
            });
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: Caller<'_, VmState>,
         key_ptr: i32,
         key_len: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> Result<i32> {
            let key = read_str(&mut c, key_ptr, key_len)?;
            let entry = lock(&c.data().shared.data).get(&key).cloned();
            let Some((value, cas)) = entry else {
                return Ok(STATUS_NOT_FOUND);
            };
            hand_over(&mut c, &value, ret_ptr, ret_size)?;
            write(&mut c, ret_cas, &cas.to_le_bytes())?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: Caller<'_, VmState>,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32,
         cas: i32|
         -> Result<i32> {
            let key = read_str(&mut c, key_ptr, key_len)?;
            let value = read(&mut c, value_ptr, value_len)?;
            let shared = Arc::clone(&c.data().shared);
            let mut data = lock(&shared.data);
            let current = data.get(&key).map(|(_, v)| *v);
            if cas != 0 && current.is_some_and(|v| v != cas as u32) {
                return Ok(STATUS_CAS_MISMATCH);
            }
            data.insert(key, (value, current.unwrap_or(0) + 1));
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: Caller<'_, VmState>,
         _kind: i32,
         name_ptr: i32,
         name_len: i32,
         ret_id: i32|
         -> Result<i32> {
            let name = read_str(&mut c, name_ptr, name_len)?;
            let id = {
                let mut metrics = lock(&c.data().shared.metrics);
                match metrics.iter().position(|(n, _)| *n == name) {
                    Some(id) => id,
                    None => {
                        metrics.push((name, 0));
                        metrics.len() - 1
                    }
                }
            };
            write(&mut c, ret_id, &u32::try_from(id)?.to_le_bytes())?;
            Ok(STATUS_OK)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: Caller<'_, VmState>, id: i32, offset: i64| -> i32 {
            match lock(&c.data().shared.metrics).get_mut(id as u32 as usize) {
                Some((_, value)) => {
                    *value += offset;
                    STATUS_OK
                }
                None => STATUS_NOT_FOUND,
            }
        },
    )?;
    for name in ["proxy_set_effective_context", "proxy_close_stream"] {
        linker.func_wrap("env", name, |_: Caller<'_, VmState>, _: i32| -> i32 {
            STATUS_OK
        })?;
    }
    linker.func_wrap("env", "proxy_done", |_: Caller<'_, VmState>| -> i32 {
        STATUS_OK
    })?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_sizes_get",
        |mut c: Caller<'_, VmState>, count: i32, size: i32| -> Result<i32> {
            write(&mut c, count, &0u32.to_le_bytes())?;
            write(&mut c, size, &0u32.to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "environ_get",
        |_: Caller<'_, VmState>, _: i32, _: i32| -> i32 { 0 },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_write",
        |mut c: Caller<'_, VmState>,
         _fd: i32,
         iovs: i32,
         count: i32,
         written: i32|
         -> Result<i32> {
            let mut total = 0u32;
            for i in 0..count {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let (ptr, len) = (
                    i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]),
                    i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]),
                );
                let text = read_str(&mut c, ptr, len)?;
                c.data_mut().logs.push(text);
                total += len as u32;
            }
            write(&mut c, written, &total.to_le_bytes())?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "proc_exit",
        |_: Caller<'_, VmState>, code: i32| -> Result<()> {
            Err(wasmtime::Error::msg(format!(
                "the guest called proc_exit({code})"
            )))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_through_the_abi_encoding() {
        let pairs = vec![
            (":path".to_owned(), b"/v1".to_vec()),
            ("x-empty".to_owned(), Vec::new()),
        ];
        let decoded: Vec<(String, Vec<u8>)> = decode_map(&encode_map(&pairs))
            .into_iter()
            .map(|(name, value)| (name, value.into_bytes()))
            .collect();
        assert_eq!(decoded, pairs);
    }
}
