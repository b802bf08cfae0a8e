//! A `tracing` subscriber for the fuzz targets that formats every record it is given.

use std::fmt;

/// A `tracing` subscriber that formats records into nothing: a log message whose arguments panic
/// when formatted (as fuse-backend-rs's did) fails the target. Every level but INFO: the daemon
/// formats INFO records in every run (its default level), and the one the server emits per INIT
/// (the agreed flags spelled out) cost 8% of this target's speed; DEBUG and TRACE, which nothing
/// else formats, are where a panic could hide.
pub struct FormatAll;

struct Discard;

impl fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
}

impl tracing::field::Visit for Discard {
    fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        let _ = write!(self, "{value:?}");
    }
}

impl tracing::Subscriber for FormatAll {
    fn enabled(&self, meta: &tracing::Metadata<'_>) -> bool {
        *meta.level() != tracing::Level::INFO
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Discard);
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Discard);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut Discard);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
