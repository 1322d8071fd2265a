pub mod crd;
pub mod names;
pub mod repository;
