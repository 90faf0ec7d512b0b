//! The commands, one module each. A command module uses the shared modules (`context`,
//! `output`, `remote`, `issue`, `exit`, `cli`) and never another command module.

pub mod acme;
pub mod agent;
pub mod audit;
pub mod ca;
pub mod cert;
pub mod crl;
pub mod proxy;
pub mod quickstart;
pub mod serve;
pub mod token;
