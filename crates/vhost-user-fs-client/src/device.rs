//! The vhost-user frontend: connects to a backend socket and sets the device up the way QEMU's
//! `vhost-user-fs-pci` does, then offers the virtqueues and a raw chain API.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::GuestAddress;

use crate::error::{Error, Result};
use crate::memory::{Allocation, GuestMemory};
use crate::virtqueue::{Buffers, Completion, Descriptor, RawDescriptor, Token, Virtqueue};

/// `VHOST_USER_F_PROTOCOL_FEATURES`.
const PROTOCOL_FEATURES: u64 = 1 << 30;

/// How to set the device up.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
    /// Request queues (QEMU `num-request-queues`); the hiprio queue comes on top.
    pub request_queues: u16,
    /// Descriptors per queue (QEMU `queue-size`; a power of two).
    pub queue_size: u16,
    /// Size of each guest memory region (one memfd each).
    pub memory_regions: Vec<u64>,
    /// Negotiate `VIRTIO_RING_F_EVENT_IDX` if offered.
    pub event_idx: bool,
    /// Negotiate `VIRTIO_RING_F_INDIRECT_DESC` if offered.
    pub indirect_desc: bool,
    /// Negotiate `REPLY_ACK` if offered (every message then asks for an ack).
    pub reply_ack: bool,
    /// Negotiate `CONFIGURE_MEM_SLOTS` if offered and send the regions with ADD_MEM_REG instead
    /// of SET_MEM_TABLE (what QEMU does when both ends support it).
    pub add_mem_reg: bool,
    /// Default time to wait for any completion before reporting [`Error::Timeout`].
    pub timeout: Duration,
    /// Memory regions mapped from the start but announced to the backend only by
    /// [`Device::hot_add_memory`], one per call (memory hot-add).
    pub hotplug_regions: Vec<u64>,
    /// Where every ring's indices start (sent with SET_VRING_BASE and written to the rings, as
    /// after a migration); e.g. `65536 - 20` to cross the 16-bit index wrap early.
    pub initial_index: u16,
}

impl DeviceConfig {
    /// Defaults like QEMU's: 1 request queue of 128 descriptors, 64 MiB in one region, every
    /// optional feature the backend offers, SET_MEM_TABLE, a 30 s timeout.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            request_queues: 1,
            queue_size: 128,
            memory_regions: vec![64 << 20],
            event_idx: true,
            indirect_desc: true,
            reply_ack: true,
            add_mem_reg: false,
            timeout: Duration::from_secs(30),
            initial_index: 0,
            hotplug_regions: Vec::new(),
        }
    }
}

/// What a reset of the device sends besides stopping the rings ([`Device::reset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Nothing: QEMU 7.2 on a guest reboot (SET_VRING_ENABLE 0 and GET_VRING_BASE per
    /// ring, then the rings set up again for the new driver).
    Rings,
    /// RESET_DEVICE after stopping the rings: newer QEMU when RESET_DEVICE is negotiated.
    Device,
}

/// What the two ends agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Virtio features offered by the backend.
    pub offered_features: u64,
    /// Virtio features acked with SET_FEATURES.
    pub features: u64,
    /// Protocol features offered by the backend.
    pub offered_protocol_features: u64,
    /// Protocol features acked with SET_PROTOCOL_FEATURES.
    pub protocol_features: u64,
    /// GET_QUEUE_NUM answer (None without MQ).
    pub backend_queues: Option<u64>,
    /// GET_MAX_MEM_SLOTS answer (None without CONFIGURE_MEM_SLOTS).
    pub max_mem_slots: Option<u64>,
}

impl Negotiated {
    /// Whether EVENT_IDX is in use.
    pub fn event_idx(&self) -> bool {
        self.features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0
    }
    /// Whether indirect descriptors are in use.
    pub fn indirect_desc(&self) -> bool {
        self.features & (1 << VIRTIO_RING_F_INDIRECT_DESC) != 0
    }
}

/// One device-readable part of a raw chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadPart {
    /// Bytes copied into freshly allocated guest memory.
    Bytes(Vec<u8>),
    /// A descriptor pointing wherever the test likes (possibly outside guest memory).
    Raw {
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u32,
    },
}

/// One device-writable part of a raw chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePart {
    /// A zeroed buffer of this length in guest memory, read back on completion.
    Len(u32),
    /// A descriptor pointing wherever the test likes; not read back.
    Raw {
        /// Guest-physical address.
        addr: u64,
        /// Length.
        len: u32,
    },
}

/// An arbitrary descriptor chain: readable parts, then writable parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawChain {
    /// Device-readable parts, in order.
    pub readable: Vec<ReadPart>,
    /// Device-writable parts, in order.
    pub writable: Vec<WritePart>,
    /// Put the chain in an indirect descriptor table (if negotiated).
    pub indirect: bool,
}

/// A set-up virtio-fs device: the vhost-user connection, guest memory and all queues.
///
/// `Device` is `Sync`: any number of threads may submit and wait on any queues at once.
pub struct Device {
    frontend: Mutex<Frontend>,
    mem: Arc<GuestMemory>,
    queues: Vec<Virtqueue>,
    negotiated: Negotiated,
    config: DeviceConfig,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("socket", &self.config.socket)
            .field("negotiated", &self.negotiated)
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

/// Sets up every ring afresh (SET_VRING_NUM, _ADDR, _BASE, _KICK, _CALL, then SET_VRING_ENABLE),
/// with new, zeroed rings whose indices start at `initial_index`: what QEMU does when a driver
/// starts the device.
fn setup_rings(
    fe: &mut Frontend,
    mem: &Arc<GuestMemory>,
    config: &DeviceConfig,
    negotiated: Negotiated,
    initial_index: u16,
) -> Result<Vec<Virtqueue>> {
    let nq = 1 + usize::from(config.request_queues);
    let mut queues = Vec::with_capacity(nq);
    for i in 0..nq {
        let q = Virtqueue::new(
            i as u16,
            config.queue_size,
            mem.clone(),
            negotiated.event_idx(),
            negotiated.indirect_desc(),
            initial_index,
        )?;
        let l = q.layout();
        let cfg = VringConfigData {
            queue_max_size: l.size,
            queue_size: l.size,
            flags: 0,
            desc_table_addr: mem.host_address(l.desc)?,
            used_ring_addr: mem.host_address(l.used)?,
            avail_ring_addr: mem.host_address(l.avail)?,
            log_addr: None,
        };
        step("SET_VRING_NUM", fe.set_vring_num(i, l.size))?;
        step("SET_VRING_ADDR", fe.set_vring_addr(i, &cfg))?;
        step("SET_VRING_BASE", fe.set_vring_base(i, initial_index))?;
        step("SET_VRING_KICK", fe.set_vring_kick(i, q.kick_fd()))?;
        step("SET_VRING_CALL", fe.set_vring_call(i, q.call_fd()))?;
        queues.push(q);
    }
    for i in 0..nq {
        step("SET_VRING_ENABLE", fe.set_vring_enable(i, true))?;
    }
    for i in 0..nq {
        step("SET_VRING_ENABLE", fe.set_vring_enable(i, true))?;
    }
    Ok(queues)
}

fn step<T>(step: &'static str, r: vhost::Result<T>) -> Result<T> {
    r.map_err(|source| Error::Setup { step, source })
}

impl Device {
    /// Connects to `config.socket` and sets the device up: SET_OWNER, feature and protocol
    /// feature negotiation, GET_QUEUE_NUM, the memory table, every vring, SET_VRING_ENABLE.
    pub fn connect(config: DeviceConfig) -> Result<Self> {
        if config.request_queues == 0 {
            return Err(Error::InvalidConfig("at least one request queue".into()));
        }
        let nq = 1 + usize::from(config.request_queues);
        let mem = Arc::new(GuestMemory::with_hotplug(
            &config.memory_regions,
            &config.hotplug_regions,
        )?);
        let mut fe = step("connect", Frontend::connect(&config.socket, nq as u64))?;
        step("SET_OWNER", fe.set_owner())?;
        let offered = step("GET_FEATURES", fe.get_features())?;
        for (bit, name) in [
            (1u64 << VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1"),
            (PROTOCOL_FEATURES, "VHOST_USER_F_PROTOCOL_FEATURES"),
        ] {
            if offered & bit == 0 {
                return Err(Error::MissingFeature(name));
            }
        }
        let offered_pf = step("GET_PROTOCOL_FEATURES", fe.get_protocol_features())?;
        // RESET_DEVICE changes nothing until `Device::reset` asks for it.
        let mut want_pf = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::RESET_DEVICE;
        if config.reply_ack {
            want_pf |= VhostUserProtocolFeatures::REPLY_ACK;
        }
        if config.add_mem_reg {
            want_pf |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        }
        let pf = want_pf & offered_pf;
        step("SET_PROTOCOL_FEATURES", fe.set_protocol_features(pf))?;
        if pf.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let backend_queues = if pf.contains(VhostUserProtocolFeatures::MQ) {
            let n = step("GET_QUEUE_NUM", fe.get_queue_num())?;
            if n < nq as u64 {
                return Err(Error::InvalidConfig(format!(
                    "backend has {n} queues, we need {nq} (hiprio + {})",
                    config.request_queues
                )));
            }
            Some(n)
        } else {
            if nq > 2 {
                return Err(Error::MissingFeature("VHOST_USER_PROTOCOL_F_MQ"));
            }
            None
        };
        let max_mem_slots = if pf.contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS) {
            Some(step("GET_MAX_MEM_SLOTS", fe.get_max_mem_slots())?)
        } else {
            None
        };

        let mut features = (1 << VIRTIO_F_VERSION_1) | PROTOCOL_FEATURES;
        if config.event_idx {
            features |= offered & (1 << VIRTIO_RING_F_EVENT_IDX);
        }
        if config.indirect_desc {
            features |= offered & (1 << VIRTIO_RING_F_INDIRECT_DESC);
        }
        step("SET_FEATURES", fe.set_features(features))?;

        let regions = mem.region_infos()?;
        if max_mem_slots.is_some() {
            for r in &regions {
                step("ADD_MEM_REG", fe.add_mem_region(r))?;
            }
        } else {
            step("SET_MEM_TABLE", fe.set_mem_table(&regions))?;
        }

        let negotiated = Negotiated {
            offered_features: offered,
            features,
            offered_protocol_features: offered_pf.bits(),
            protocol_features: pf.bits(),
            backend_queues,
            max_mem_slots,
        };
        let queues = setup_rings(&mut fe, &mem, &config, negotiated, config.initial_index)?;
        Ok(Self {
            frontend: Mutex::new(fe),
            mem,
            queues,
            negotiated,
            config,
        })
    }

    /// The configuration this device was set up with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Guest memory.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Number of queues (hiprio + request queues).
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// Queue `index` (0 = hiprio, 1.. = request queues).
    pub fn queue(&self, index: usize) -> Result<&Virtqueue> {
        self.queues.get(index).ok_or(Error::NoSuchQueue(index))
    }

    /// Sends SET_VRING_ENABLE for one queue.
    pub fn set_vring_enable(&self, queue: usize, enable: bool) -> Result<()> {
        self.queue(queue)?;
        step(
            "SET_VRING_ENABLE",
            self.frontend
                .lock()
                .unwrap()
                .set_vring_enable(queue, enable),
        )
    }

    /// Hot-adds the next of [`DeviceConfig::hotplug_regions`], as QEMU does for a new DIMM:
    /// ADD_MEM_REG when CONFIGURE_MEM_SLOTS was negotiated, otherwise a new SET_MEM_TABLE with
    /// every plugged region. From then on request buffers may lie in it. Returns its guest
    /// address and length.
    pub fn hot_add_memory(&self) -> Result<(GuestAddress, u64)> {
        let info = self
            .mem
            .plug_next(|info, table| {
                let mut fe = self.frontend.lock().unwrap();
                if self.negotiated.max_mem_slots.is_some() {
                    step("ADD_MEM_REG", fe.add_mem_region(info))
                } else {
                    step("SET_MEM_TABLE", fe.set_mem_table(table))
                }
            })?
            .ok_or_else(|| Error::InvalidConfig("no hot-pluggable region left".into()))?;
        Ok((GuestAddress(info.guest_phys_addr), info.memory_size))
    }

    /// Resets the device as a guest reboot does, then sets it up for a new driver: every ring
    /// is disabled and stopped (SET_VRING_ENABLE 0, GET_VRING_BASE), `how` says whether
    /// RESET_DEVICE follows, then the features and fresh rings (indices from 0, as a new driver
    /// starts them) are set up and enabled. Requests still in the old rings are lost, as in a
    /// guest that reboots; the FUSE session is the backend's to end (the caller INITs again).
    pub fn reset(&mut self, how: Reset) -> Result<()> {
        for i in 0..self.queues.len() {
            self.set_vring_enable(i, false)?;
        }
        for i in 0..self.queues.len() {
            self.get_vring_base(i)?;
        }
        let fe = self.frontend.get_mut().unwrap();
        if how == Reset::Device {
            if self.negotiated.protocol_features & VhostUserProtocolFeatures::RESET_DEVICE.bits()
                == 0
            {
                return Err(Error::MissingFeature("VHOST_USER_PROTOCOL_F_RESET_DEVICE"));
            }
            step("RESET_DEVICE", fe.reset_device())?;
        }
        // The old rings' memory goes back to the allocator before the new rings take theirs.
        self.queues.clear();
        step("SET_FEATURES", fe.set_features(self.negotiated.features))?;
        self.queues = setup_rings(fe, &self.mem, &self.config, self.negotiated, 0)?;
        Ok(())
    }

    /// Sends GET_VRING_BASE (stops the ring in the backend, as QEMU does on VM stop) and returns
    /// the backend's next avail index.
    pub fn get_vring_base(&self, queue: usize) -> Result<u32> {
        self.queue(queue)?;
        step(
            "GET_VRING_BASE",
            self.frontend.lock().unwrap().get_vring_base(queue),
        )
    }

    /// Posts an arbitrary chain on `queue` (blocks while the queue is full, up to the
    /// configured timeout).
    pub fn submit_raw(&self, queue: usize, chain: &RawChain) -> Result<Token> {
        let q = self.queue(queue)?;
        let mut descs = Vec::with_capacity(chain.readable.len() + chain.writable.len());
        let mut buffers = Buffers::default();
        let r = self.build_raw(chain, &mut descs, &mut buffers);
        if let Err(e) = r {
            for a in buffers.owned {
                self.mem.free(a);
            }
            return Err(e);
        }
        q.submit(&descs, chain.indirect, buffers, self.config.timeout)
    }

    fn build_raw(
        &self,
        chain: &RawChain,
        descs: &mut Vec<Descriptor>,
        buffers: &mut Buffers,
    ) -> Result<()> {
        for p in &chain.readable {
            match p {
                ReadPart::Bytes(b) => {
                    let a = self.alloc_owned(b.len() as u64, buffers)?;
                    self.mem.write(a.addr, b)?;
                    descs.push(Descriptor {
                        addr: a.addr.0,
                        len: b.len() as u32,
                        write: false,
                    });
                }
                &ReadPart::Raw { addr, len } => descs.push(Descriptor {
                    addr,
                    len,
                    write: false,
                }),
            }
        }
        for p in &chain.writable {
            match *p {
                WritePart::Len(len) => {
                    let a = self.alloc_owned(u64::from(len), buffers)?;
                    self.mem.write(a.addr, &vec![0u8; len as usize])?;
                    buffers.read_back.push((a.addr, len));
                    descs.push(Descriptor {
                        addr: a.addr.0,
                        len,
                        write: true,
                    });
                }
                WritePart::Raw { addr, len } => descs.push(Descriptor {
                    addr,
                    len,
                    write: true,
                }),
            }
        }
        Ok(())
    }

    fn alloc_owned(&self, len: u64, buffers: &mut Buffers) -> Result<Allocation> {
        let a = self.mem.alloc(len, 64)?;
        buffers.owned.push(a);
        Ok(a)
    }

    /// Posts descriptors exactly as given on `queue` (see [`Virtqueue::submit_descriptors`]):
    /// for chains [`RawChain`] cannot express. `buffers` are freed and read back as for any
    /// chain when the completion is taken.
    pub fn submit_descriptors(
        &self,
        queue: usize,
        descs: &[RawDescriptor],
        buffers: Buffers,
    ) -> Result<Token> {
        self.queue(queue)?
            .submit_descriptors(descs, buffers, self.config.timeout)
    }

    /// Waits (up to the configured timeout) for the completion of `token` and takes it.
    pub fn wait(&self, token: Token) -> Result<Completion> {
        self.wait_timeout(token, self.config.timeout)
    }

    /// Waits up to `timeout` for the completion of `token` and takes it.
    pub fn wait_timeout(&self, token: Token, timeout: Duration) -> Result<Completion> {
        self.queue(usize::from(token.queue))?.wait(token, timeout)
    }

    /// Takes the completion of `token` if it has arrived; never blocks.
    pub fn try_take(&self, token: Token) -> Result<Option<Completion>> {
        self.queue(usize::from(token.queue))?.try_take(token)
    }

    /// Waits up to `timeout` for the backend to close its end of the vhost-user socket; true if
    /// it did (the backend exited or dropped us). Only polls the socket, never reads from it, so
    /// it may run at any time from any thread (a bridge watches its backend with it).
    pub fn backend_hung_up(&self, timeout: Duration) -> bool {
        use std::os::unix::io::AsRawFd;
        let fd = self.frontend.lock().unwrap().as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is a valid pollfd for the duration of the call; `fd` stays open as long
        // as `self` (the frontend owns it and is never replaced).
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        r > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// An address inside no region (the hole after the first region): for hostile tests.
    pub fn unmapped_address(&self) -> GuestAddress {
        let (start, len) = self.mem.regions()[0];
        GuestAddress(start.0 + len + 0x1000)
    }
}
