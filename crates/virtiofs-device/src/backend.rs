//! The `VhostUserBackend` implementation: what the virtio-fs device offers the frontend.

use std::io;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{
    Address, GuestAddressSpace, GuestMemory as _, GuestMemoryAtomic, GuestMemoryMmap,
    GuestMemoryRegion,
};
use vmm_sys_util::epoll::EventSet;

use crate::memory::MemoryGenerations;
use crate::vring::{take_created, QueueLink, WatchedVring};

/// Guest memory as the vhost-user backend shares it: swapped atomically on SET_MEM_TABLE,
/// ADD_MEM_REG and REM_MEM_REG.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Request queues we can serve (QEMU `vhost-user-fs-pci,num-request-queues=N`).
pub const MAX_REQUEST_QUEUES: usize = 64;

/// Largest queue size we accept (the virtio split-ring maximum).
pub const MAX_QUEUE_SIZE: usize = 32768;

/// Longest virtio-fs tag: the `tag` field of the device's config space (virtio 1.2, 5.11.4).
pub const MAX_TAG_LEN: usize = 36;

/// Size of the virtio-fs config space: `tag[36]` and `le32 num_request_queues`.
pub const CONFIG_SPACE_LEN: usize = MAX_TAG_LEN + 4;

/// A tag that does not fit the config space.
#[derive(Debug, thiserror::Error)]
#[error("the tag must be 1 to {MAX_TAG_LEN} bytes of UTF-8, not {0}")]
pub struct TagError(pub usize);

/// Device settings chosen on the command line.
#[derive(Debug, Clone)]
pub struct FsBackendConfig {
    /// Number of request queues offered (the hiprio queue comes on top).
    pub request_queues: usize,
}

impl Default for FsBackendConfig {
    fn default() -> Self {
        Self {
            request_queues: MAX_REQUEST_QUEUES,
        }
    }
}

/// What the device does when the frontend resets it (see [`FsBackend::on_device_reset`]).
type ResetHook = Box<dyn Fn() + Send + Sync>;

/// The virtio-fs device as the vhost-user protocol thread sees it.
///
/// It processes no queue itself: [`FsBackend::create_daemon`] returns the queues so that the
/// request pipeline can drive them.
#[derive(Clone)]
pub struct FsBackend {
    config: FsBackendConfig,
    /// `--tag`: offered through VHOST_USER_PROTOCOL_F_CONFIG when set.
    tag: Option<Arc<str>>,
    // Shared by every clone: the daemon holds one, the caller sets the hook on another.
    on_reset: Arc<OnceLock<ResetHook>>,
    /// Bumped after each new memory table (the queues' [`crate::QueueMemory`] watch it).
    generations: MemoryGenerations,
    /// Every queue's vring, told of each new memory table.
    vrings: Arc<OnceLock<Vec<WatchedVring>>>,
    /// Only in the clone the vhost-user daemon holds: dropped with it (see [`HandlerReleased`]).
    held_by_daemon: Option<Arc<watch::Sender<()>>>,
}

/// Resolves once the vhost-user library has let go of its backend: after
/// [`VhostUserDaemon::start`] and a drop of the [`VhostUserDaemon`], its protocol thread is the
/// last holder, so this is the end of that thread (the frontend disconnected, or the
/// connection failed), learnt without a thread parked in [`VhostUserDaemon::wait`].
pub struct HandlerReleased(watch::Receiver<()>);

impl HandlerReleased {
    /// Waits until the library's backend is dropped.
    pub async fn wait(mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

impl FsBackend {
    /// A backend offering `config.request_queues` request queues plus the hiprio queue.
    pub fn new(config: FsBackendConfig) -> Self {
        Self {
            config,
            tag: None,
            on_reset: Arc::default(),
            generations: MemoryGenerations::default(),
            vrings: Arc::default(),
            held_by_daemon: None,
        }
    }

    /// Advertises `tag` in the device's config space: the CONFIG protocol feature is offered and
    /// GET_CONFIG answers `tag` (NUL-padded) and the number of request queues. Frontends may
    /// ignore it (QEMU uses its own `tag=` property).
    pub fn with_tag(mut self, tag: &str) -> Result<Self, TagError> {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(TagError(tag.len()));
        }
        self.tag = Some(tag.into());
        Ok(self)
    }

    /// The virtio-fs config space: `tag` padded with NUL bytes (not NUL-terminated when it
    /// fills the field), then `num_request_queues` little-endian.
    fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        if let Some(tag) = &self.tag {
            space[..tag.len()].copy_from_slice(tag.as_bytes());
        }
        space[MAX_TAG_LEN..].copy_from_slice(&(self.config.request_queues as u32).to_le_bytes());
        space
    }

    /// Runs `hook` on the vhost-user protocol thread whenever the frontend resets the device
    /// (VHOST_USER_RESET_DEVICE, after the library has disabled every ring), before the reset is
    /// acknowledged. Only the first hook set is kept; returns `false` for later ones.
    pub fn on_device_reset(&self, hook: impl Fn() + Send + Sync + 'static) -> bool {
        self.on_reset.set(Box::new(hook)).is_ok()
    }

    /// Creates the vhost-user daemon around this backend and returns, with it, one
    /// [`QueueLink`] per queue in queue order (index 0 is the hiprio queue).
    pub fn create_daemon(
        &self,
        name: &str,
    ) -> Result<(VhostUserDaemon<FsBackend>, Vec<QueueLink>), vhost_user_backend::Error> {
        self.create_daemon_watched(name)
            .map(|(daemon, links, _)| (daemon, links))
    }

    /// [`FsBackend::create_daemon`], with what tells when the daemon's protocol thread ends.
    #[allow(clippy::type_complexity)]
    pub fn create_daemon_watched(
        &self,
        name: &str,
    ) -> Result<
        (VhostUserDaemon<FsBackend>, Vec<QueueLink>, HandlerReleased),
        vhost_user_backend::Error,
    > {
        let mem = GuestMemory::new(GuestMemoryMmap::new());
        let (released, watch) = watch::channel(());
        let mut for_daemon = self.clone();
        for_daemon.held_by_daemon = Some(Arc::new(released));
        // `VhostUserDaemon::new` creates the vrings on this thread, in queue order.
        drop(take_created());
        let daemon = VhostUserDaemon::new(name.to_owned(), for_daemon, mem.clone())?;
        let vrings: Vec<WatchedVring> = take_created();
        assert_eq!(vrings.len(), self.num_queues(), "one vring per queue");
        let _ = self.vrings.set(vrings.clone());
        let links = vrings
            .into_iter()
            .enumerate()
            .map(|(index, vring)| {
                vring.set_index(index);
                QueueLink {
                    index,
                    vring,
                    mem: mem.clone(),
                    generations: self.generations.clone(),
                }
            })
            .collect();
        Ok((daemon, links, HandlerReleased(watch)))
    }
}

impl VhostUserBackend for FsBackend {
    type Bitmap = ();
    type Vring = WatchedVring;

    fn num_queues(&self) -> usize {
        1 + self.config.request_queues
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::RESET_DEVICE
            | if self.tag.is_some() {
                // Only with a tag: QEMU 7.1 to 8.0 crash when a vhost-user-fs backend offers it.
                VhostUserProtocolFeatures::CONFIG
            } else {
                VhostUserProtocolFeatures::empty()
            }
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // Bytes past the config space read as zero.
        let space = self.config_space();
        (offset as usize..offset as usize + size as usize)
            .map(|i| space.get(i).copied().unwrap_or(0))
            .collect()
    }

    /// VHOST_USER_RESET_DEVICE: newer QEMU (since its commit 2688e8df, late 2024) sends it when
    /// the guest resets the device (reboot, driver unbind). QEMU 7.2 says nothing; the pipeline then ends the session at the
    /// new driver's FUSE_INIT.
    fn reset_device(&self) {
        tracing::info!("frontend reset the device");
        if let Some(hook) = self.on_reset.get() {
            hook();
        }
    }

    fn set_event_idx(&self, _enabled: bool) {
        // Nothing to do here: the library sets EVENT_IDX on every vring, and `virtio-queue`
        // applies it when the pipeline enables notifications or asks whether to notify.
    }

    fn update_memory(&self, mem: GuestMemory) -> io::Result<()> {
        // The library has already replaced the table in the `GuestMemoryAtomic` the queues
        // share; each queue takes it at its next batch, and a queue waiting for a kick lets go
        // of the old one at once (a vring change makes it start over).
        self.generations.bump();
        for vring in self.vrings.get().into_iter().flatten() {
            vring.changed("saw a new memory table");
        }
        let mem = mem.memory();
        let regions: Vec<String> = mem
            .iter()
            .map(|r| format!("{:#x}+{:#x}", r.start_addr().raw_value(), r.len()))
            .collect();
        tracing::info!(
            regions = regions.len(),
            "guest memory mapped: {}",
            regions.join(", ")
        );
        Ok(())
    }

    /// No library epoll threads: every queue's kick eventfd belongs to a tokio task.
    fn queues_per_thread(&self) -> Vec<u64> {
        Vec::new()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        _vrings: &[WatchedVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Unreachable: we register no epoll thread. Fail loudly rather than drop a kick.
        Err(io::Error::other(format!(
            "unexpected vhost-user epoll event {device_event}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::io::AsRawFd;
    use vhost_user_backend::VringT;

    #[test]
    fn daemon_returns_one_link_per_queue_in_order() {
        let backend = FsBackend::new(FsBackendConfig { request_queues: 3 });
        let (_daemon, links) = backend.create_daemon("test").unwrap();
        assert_eq!(links.len(), 4);
        for (i, link) in links.iter().enumerate() {
            assert_eq!(link.index, i);
        }
        // Each link is a distinct vring: changing one does not touch the others.
        let rx0 = links[0].vring.subscribe();
        let rx2 = links[2].vring.subscribe();
        links[2].vring.set_enabled(true);
        assert!(rx2.has_changed().unwrap());
        assert!(!rx0.has_changed().unwrap());
    }

    #[test]
    fn ring_is_runnable_only_when_started_enabled_and_kicked() {
        let backend = FsBackend::new(FsBackendConfig { request_queues: 1 });
        let (_daemon, links) = backend.create_daemon("test").unwrap();
        let vring = &links[1].vring;
        assert!(vring.runnable_kick().is_none());
        let kick = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
        // SAFETY: the eventfd stays open for the whole test.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(kick.as_raw_fd()) };
        let file = std::fs::File::from(fd.try_clone_to_owned().unwrap());
        vring.set_kick(Some(file));
        vring.set_queue_ready(true);
        assert!(vring.runnable_kick().is_none(), "not enabled yet");
        vring.set_enabled(true);
        assert!(vring.runnable_kick().unwrap().is_ok());
        vring.set_queue_ready(false);
        assert!(vring.runnable_kick().is_none(), "stopped by GET_VRING_BASE");
    }

    #[tokio::test]
    async fn released_once_the_daemon_and_every_backend_clone_of_it_are_gone() {
        let backend = FsBackend::new(FsBackendConfig { request_queues: 1 });
        let (daemon, _links, released) = backend.create_daemon_watched("test").unwrap();
        // On this current-thread runtime a yield lets the task run once.
        let task = tokio::spawn(released.wait());
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "the daemon still holds its backend");
        drop(backend); // our own clone does not count
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        drop(daemon);
        task.await.unwrap();
    }

    #[test]
    fn a_new_memory_table_reaches_every_queue() {
        let backend = FsBackend::new(FsBackendConfig { request_queues: 2 });
        let (_daemon, links) = backend.create_daemon("test").unwrap();
        let mut views: Vec<_> = links.iter().map(QueueLink::queue_memory).collect();
        let mut rxs: Vec<_> = links.iter().map(|l| l.vring.subscribe()).collect();
        assert!(views.iter_mut().all(|v| v.current().num_regions() == 0));
        let ranges = [(vm_memory::GuestAddress(0), 0x1000)];
        let table = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        links[0].mem.lock().unwrap().replace(table);
        backend.update_memory(links[0].mem.clone()).unwrap();
        for (view, rx) in views.iter_mut().zip(&mut rxs) {
            assert_eq!(view.current().num_regions(), 1, "taken at the next batch");
            assert!(rx.has_changed().unwrap(), "a waiting queue is woken");
        }
    }

    #[test]
    fn device_reset_runs_the_hook_set_on_any_clone() {
        let backend = FsBackend::new(FsBackendConfig { request_queues: 1 });
        let daemon_side = backend.clone();
        let resets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = resets.clone();
        assert!(backend.on_device_reset(move || {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        assert!(!backend.on_device_reset(|| {}), "one hook only");
        daemon_side.reset_device();
        daemon_side.reset_device();
        assert_eq!(resets.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn offers_multiqueue_event_idx_and_indirect_descriptors() {
        let backend = FsBackend::new(FsBackendConfig::default());
        let f = backend.features();
        assert_ne!(f & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
        assert_ne!(f & (1 << VIRTIO_RING_F_INDIRECT_DESC), 0);
        assert!(backend
            .protocol_features()
            .contains(VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::RESET_DEVICE));
        assert_eq!(backend.num_queues(), 1 + MAX_REQUEST_QUEUES);
    }

    #[test]
    fn tag_is_offered_through_the_config_space() {
        let plain = FsBackend::new(FsBackendConfig { request_queues: 4 });
        assert!(!plain
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG));
        let tagged = plain.clone().with_tag("myfs").unwrap();
        assert!(tagged
            .protocol_features()
            .contains(VhostUserProtocolFeatures::CONFIG));
        let space = tagged.get_config(0, CONFIG_SPACE_LEN as u32);
        assert_eq!(&space[..4], b"myfs");
        assert!(space[4..MAX_TAG_LEN].iter().all(|&b| b == 0));
        assert_eq!(&space[MAX_TAG_LEN..], &4u32.to_le_bytes());
        assert_eq!(tagged.get_config(36, 8), [4, 0, 0, 0, 0, 0, 0, 0]);
        let full = "t".repeat(MAX_TAG_LEN);
        let space = plain.clone().with_tag(&full).unwrap().get_config(0, 36);
        assert_eq!(
            space,
            full.as_bytes(),
            "no NUL terminator when the tag fills the field"
        );
        assert!(plain.clone().with_tag("").is_err());
        assert!(plain.with_tag(&"t".repeat(MAX_TAG_LEN + 1)).is_err());
    }
}
