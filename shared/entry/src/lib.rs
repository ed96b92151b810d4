//! The entry glue every function shares: settings read once (`settings`), the composition root
//! (`root`), HTTP answers and extractors (`http`), the Lambda boundary with its typed events
//! (`lambda`) and structured logs (`telemetry`).

pub mod http;
pub mod lambda;
pub mod root;
pub mod settings;
pub mod telemetry;

pub use root::Root;
pub use settings::Settings;
