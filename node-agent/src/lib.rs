//! Ferry's node agent: the transfer process, its command line, the restore marker and the
//! restore helper.

pub mod agent;
pub mod cli;
pub mod decision;
pub mod marker;
pub mod restore_helper;
pub mod transfer;
pub mod volume_path;
