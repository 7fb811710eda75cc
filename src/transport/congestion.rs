//! QUIC congestion control, chosen by name: the server's (`[performance]
//! quic_congestion_control`, for what it sends: downloads) and the client's (`xferd upload
//! --congestion`, for uploads). Cubic backs off on every loss; BBR paces at the measured
//! bottleneck rate and does not take random (radio) loss for congestion. quinn marks its BBR
//! experimental, so the server keeps cubic unless told otherwise.

use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Congestion {
    Cubic,
    Bbr,
    NewReno,
}

impl std::fmt::Display for Congestion {
    /// The name used in config and on the command line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

impl Congestion {
    /// Makes `transport` use this controller.
    pub fn apply(self, transport: &mut quinn::TransportConfig) {
        use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
        match self {
            Congestion::Cubic => {
                transport.congestion_controller_factory(Arc::new(CubicConfig::default()))
            }
            Congestion::Bbr => {
                transport.congestion_controller_factory(Arc::new(BbrConfig::default()))
            }
            Congestion::NewReno => {
                transport.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
            }
        };
    }
}
