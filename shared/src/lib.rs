pub mod admin;
pub mod crd;
pub mod layout;
pub mod names;
pub mod repository;
pub mod runtime;
pub mod size;
pub mod storage;
