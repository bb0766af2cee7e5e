//! One integration binary: every module here boots the real application (real HTTP, real
//! database) and runs against both storage backends.

mod cimd;
mod discovery;
mod helpers;
mod register;
mod store;
mod authorize;
mod browser;
mod flow;
mod token;
mod upstream;
