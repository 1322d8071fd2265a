//! Hooks: commands run in a pod's containers around its backup and after its restore. `plan`
//! says which hooks a pod runs; `exec` runs one through `pods/exec`; `report` turns their runs
//! into the operation's status, log lines and metrics.

pub mod exec;
pub mod plan;
pub mod report;
