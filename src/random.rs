//! Randomness is a dependency like the clock: handlers ask the state's [`Random`] for bytes, so
//! a test can swap in a deterministic source.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub trait Random: Send + Sync {
    fn fill(&self, buf: &mut [u8]);

    /// 32 random bytes, base64url without padding (43 characters, 256 bits).
    fn token(&self) -> String {
        let mut bytes = [0u8; 32];
        self.fill(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A shorter random identifier (128 bits) for values that are not secrets.
    fn id(&self) -> String {
        let mut bytes = [0u8; 16];
        self.fill(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// The operating system's CSPRNG (through rand's thread-local generator, reseeded from the OS).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl Random for SystemRandom {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one source of randomness, behind the Random trait"
    )]
    fn fill(&self, buf: &mut [u8]) {
        rand::fill(buf);
    }
}
