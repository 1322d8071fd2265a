pub mod admin;
pub mod crd;
pub mod names;
pub mod repository;
pub mod storage;
