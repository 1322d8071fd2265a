//! The built-in kinds, as data: names, scope, short names and categories as discovery shows them,
//! field selector labels, and what each registry strategy does that needs no code of its own
//! (subresources, generation, defaults, the status a create starts from). The kinds whose
//! strategies have rules in code name them with a [`Builtin`].

use super::resources::{
    Builtin, FieldDefault, FieldLabel, NameRule, Origin, ResourceType, ServedVersion, Strategy,
    When,
};

/// A field selector label of a built-in kind, as the table writes it.
#[derive(Debug)]
pub struct BuiltinLabel {
    label: &'static str,
    /// The dotted path the label reads, which is the label itself unless given.
    path: &'static str,
    /// What an absent field compares as.
    absent: &'static str,
}

impl BuiltinLabel {
    const fn at(label: &'static str) -> Self {
        Self {
            label,
            path: label,
            absent: "",
        }
    }

    /// A boolean field, which compares as `false` when absent.
    const fn boolean(label: &'static str) -> Self {
        Self {
            absent: "false",
            ..Self::at(label)
        }
    }

    /// A number read from `path`, which compares as `0` when absent.
    const fn number(label: &'static str, path: &'static str) -> Self {
        Self {
            label,
            path,
            absent: "0",
        }
    }

    fn field_label(&self) -> FieldLabel {
        FieldLabel {
            label: self.label.to_owned(),
            path: self.path.split('.').map(str::to_owned).collect(),
            absent: self.absent,
        }
    }
}

/// A built-in kind: what its type takes beyond what follows from the kind (its singular and
/// list kind).
#[derive(Debug)]
pub struct BuiltinKind {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    field_labels: &'static [BuiltinLabel],
    strategy: Strategy,
}

impl BuiltinKind {
    /// A namespaced kind of the core group, served generically.
    const NAMESPACED: Self = Self {
        group: "",
        version: "v1",
        plural: "",
        kind: "",
        namespaced: true,
        short_names: &[],
        categories: &[],
        field_labels: &[],
        strategy: Strategy::GENERIC,
    };

    /// A cluster-scoped kind of the core group, served generically.
    const CLUSTER: Self = Self {
        namespaced: false,
        ..Self::NAMESPACED
    };

    pub fn resource_type(&'static self) -> ResourceType {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        ResourceType {
            group: self.group.to_owned(),
            versions: vec![ServedVersion {
                name: self.version.to_owned(),
                schema: None,
                status: self.strategy.status,
                field_labels: self
                    .field_labels
                    .iter()
                    .map(BuiltinLabel::field_label)
                    .collect(),
            }],
            plural: self.plural.to_owned(),
            singular: self.kind.to_lowercase(),
            kind: self.kind.to_owned(),
            list_kind: format!("{}List", self.kind),
            namespaced: self.namespaced,
            short_names: strings(self.short_names),
            categories: strings(self.categories),
            origin: Origin::Builtin(&self.strategy),
        }
    }
}

/// The `all` category of `kubectl get all`.
const ALL: &[&str] = &["all"];

/// A strategy with a status subresource whose create starts from `initial`.
const fn with_status(initial: &'static str) -> Strategy {
    Strategy {
        status: true,
        initial_status: Some(initial),
        ..Strategy::GENERIC
    }
}

/// The strategy of a pod controller: status, generation, and a pod template at `template`.
const fn controller(
    rules: Option<Builtin>,
    initial: &'static str,
    defaults: &'static [FieldDefault],
    template: &'static str,
    restart_policies: &'static [&'static str],
) -> Strategy {
    Strategy {
        rules,
        generation: true,
        defaults,
        pod_template: Some(template),
        restart_policies,
        ..with_status(initial)
    }
}

const ALWAYS_RESTART: &[&str] = &["Always"];
const JOB_RESTART: &[&str] = &["OnFailure", "Never"];

const ROLLING_DEPLOYMENT: When = When::Equals("spec.strategy.type", "\"RollingUpdate\"");
const ROLLING_UPDATE: When = When::Equals("spec.updateStrategy.type", "\"RollingUpdate\"");

const DEPLOYMENT: &[FieldDefault] = &[
    FieldDefault::always("spec.replicas", "1"),
    FieldDefault::always("spec.strategy.type", "\"RollingUpdate\""),
    FieldDefault::when(
        "spec.strategy.rollingUpdate.maxUnavailable",
        "\"25%\"",
        ROLLING_DEPLOYMENT,
    ),
    FieldDefault::when(
        "spec.strategy.rollingUpdate.maxSurge",
        "\"25%\"",
        ROLLING_DEPLOYMENT,
    ),
    FieldDefault::always("spec.revisionHistoryLimit", "10"),
    FieldDefault::always("spec.progressDeadlineSeconds", "600"),
];

const STATEFUL_SET: &[FieldDefault] = &[
    FieldDefault::always("spec.replicas", "1"),
    FieldDefault::always("spec.podManagementPolicy", "\"OrderedReady\""),
    FieldDefault::always("spec.updateStrategy.type", "\"RollingUpdate\""),
    FieldDefault::when(
        "spec.updateStrategy.rollingUpdate.partition",
        "0",
        ROLLING_UPDATE,
    ),
    FieldDefault::always("spec.revisionHistoryLimit", "10"),
    FieldDefault::always(
        "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
        "\"Retain\"",
    ),
    FieldDefault::always(
        "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
        "\"Retain\"",
    ),
    FieldDefault::always(
        "spec.volumeClaimTemplates[].spec.volumeMode",
        "\"Filesystem\"",
    ),
    FieldDefault::always("spec.volumeClaimTemplates[].status.phase", "\"Pending\""),
];

const REPLICA_SET: &[FieldDefault] = &[FieldDefault::always("spec.replicas", "1")];

const DAEMON_SET: &[FieldDefault] = &[
    FieldDefault::always("spec.updateStrategy.type", "\"RollingUpdate\""),
    FieldDefault::when(
        "spec.updateStrategy.rollingUpdate.maxUnavailable",
        "1",
        ROLLING_UPDATE,
    ),
    FieldDefault::when(
        "spec.updateStrategy.rollingUpdate.maxSurge",
        "0",
        ROLLING_UPDATE,
    ),
    FieldDefault::always("spec.revisionHistoryLimit", "10"),
];

const JOB: &[FieldDefault] = &[
    FieldDefault::when("spec.completions", "1", When::Absent("spec.parallelism")),
    FieldDefault::always("spec.parallelism", "1"),
    FieldDefault::when(
        "spec.backoffLimit",
        "2147483647",
        When::Present("spec.backoffLimitPerIndex"),
    ),
    FieldDefault::always("spec.backoffLimit", "6"),
    FieldDefault::always("spec.completionMode", "\"NonIndexed\""),
    FieldDefault::always("spec.suspend", "false"),
    FieldDefault::when(
        "spec.podReplacementPolicy",
        "\"Failed\"",
        When::Present("spec.podFailurePolicy"),
    ),
    FieldDefault::always("spec.podReplacementPolicy", "\"TerminatingOrFailed\""),
];

const CRON_JOB: &[FieldDefault] = &[
    FieldDefault::always("spec.concurrencyPolicy", "\"Allow\""),
    FieldDefault::always("spec.suspend", "false"),
    FieldDefault::always("spec.successfulJobsHistoryLimit", "3"),
    FieldDefault::always("spec.failedJobsHistoryLimit", "1"),
];

/// The Service defaults that are data; `targetPort` and `internalTrafficPolicy` are code.
const SERVICE: &[FieldDefault] = &[
    FieldDefault::always("spec.type", "\"ClusterIP\""),
    FieldDefault::always("spec.sessionAffinity", "\"None\""),
    FieldDefault::when(
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        "10800",
        When::Equals("spec.sessionAffinity", "\"ClientIP\""),
    ),
    FieldDefault::always("spec.ports[].protocol", "\"TCP\""),
    FieldDefault::when(
        "spec.externalTrafficPolicy",
        "\"Cluster\"",
        When::Equals("spec.type", "\"NodePort\""),
    ),
    FieldDefault::when(
        "spec.externalTrafficPolicy",
        "\"Cluster\"",
        When::Equals("spec.type", "\"LoadBalancer\""),
    ),
    FieldDefault::when(
        "spec.allocateLoadBalancerNodePorts",
        "true",
        When::Equals("spec.type", "\"LoadBalancer\""),
    ),
];

const NETWORK_POLICY: &[FieldDefault] = &[
    FieldDefault::always("spec.ingress[].ports[].protocol", "\"TCP\""),
    FieldDefault::always("spec.egress[].ports[].protocol", "\"TCP\""),
    FieldDefault::when(
        "spec.policyTypes",
        "[\"Ingress\", \"Egress\"]",
        When::Present("spec.egress"),
    ),
    FieldDefault::always("spec.policyTypes", "[\"Ingress\"]"),
];

const HORIZONTAL_POD_AUTOSCALER: &[FieldDefault] = &[
    FieldDefault::always("spec.minReplicas", "1"),
    FieldDefault::always(
        "spec.metrics",
        r#"[{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]"#,
    ),
];

/// The built-in kinds, in the order discovery lists their groups.
pub static BUILTINS: [BuiltinKind; 31] = [
    BuiltinKind {
        plural: "pods",
        kind: "Pod",
        short_names: &["po"],
        categories: ALL,
        field_labels: &[
            BuiltinLabel::at("spec.nodeName"),
            BuiltinLabel::at("spec.restartPolicy"),
            BuiltinLabel::at("spec.schedulerName"),
            BuiltinLabel::at("spec.serviceAccountName"),
            BuiltinLabel::boolean("spec.hostNetwork"),
            BuiltinLabel::at("status.phase"),
            BuiltinLabel::at("status.podIP"),
            BuiltinLabel::at("status.nominatedNodeName"),
        ],
        strategy: Strategy {
            rules: Some(Builtin::Pod),
            status: true,
            generation: true,
            returns_deleted_object: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "namespaces",
        kind: "Namespace",
        short_names: &["ns"],
        field_labels: &[BuiltinLabel::at("status.phase")],
        strategy: Strategy {
            rules: Some(Builtin::Namespace),
            names: NameRule::Label,
            ..with_status(r#"{"phase": "Active"}"#)
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        plural: "nodes",
        kind: "Node",
        short_names: &["no"],
        field_labels: &[BuiltinLabel::boolean("spec.unschedulable")],
        strategy: Strategy {
            status: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        short_names: &["pv"],
        strategy: Strategy {
            defaults: &[
                FieldDefault::always("spec.persistentVolumeReclaimPolicy", "\"Retain\""),
                FieldDefault::always("spec.volumeMode", "\"Filesystem\""),
            ],
            ..with_status(r#"{"phase": "Pending"}"#)
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        short_names: &["pvc"],
        strategy: Strategy {
            defaults: &[FieldDefault::always("spec.volumeMode", "\"Filesystem\"")],
            ..with_status(r#"{"phase": "Pending"}"#)
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "secrets",
        kind: "Secret",
        field_labels: &[BuiltinLabel::at("type")],
        strategy: Strategy {
            rules: Some(Builtin::Secret),
            defaults: &[FieldDefault::always("type", "\"Opaque\"")],
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "configmaps",
        kind: "ConfigMap",
        short_names: &["cm"],
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        short_names: &["sa"],
        strategy: Strategy {
            rules: Some(Builtin::ServiceAccount),
            returns_deleted_object: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "events",
        kind: "Event",
        short_names: &["ev"],
        field_labels: &[
            BuiltinLabel::at("involvedObject.kind"),
            BuiltinLabel::at("involvedObject.namespace"),
            BuiltinLabel::at("involvedObject.name"),
            BuiltinLabel::at("involvedObject.uid"),
            BuiltinLabel::at("involvedObject.apiVersion"),
            BuiltinLabel::at("involvedObject.resourceVersion"),
            BuiltinLabel::at("involvedObject.fieldPath"),
            BuiltinLabel::at("reason"),
            BuiltinLabel::at("reportingComponent"),
            BuiltinLabel::at("type"),
            BuiltinLabel {
                path: "source.component",
                ..BuiltinLabel::at("source")
            },
        ],
        strategy: Strategy {
            create_on_update: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "services",
        kind: "Service",
        short_names: &["svc"],
        categories: ALL,
        strategy: Strategy {
            rules: Some(Builtin::Service),
            names: NameRule::Dns1035Label,
            defaults: SERVICE,
            ..with_status(r#"{"loadBalancer": {}}"#)
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "endpoints",
        kind: "Endpoints",
        short_names: &["ep"],
        strategy: Strategy {
            defaults: &[FieldDefault::always(
                "subsets[].ports[].protocol",
                "\"TCP\"",
            )],
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "limitranges",
        kind: "LimitRange",
        short_names: &["limits"],
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        plural: "resourcequotas",
        kind: "ResourceQuota",
        short_names: &["quota"],
        strategy: with_status("{}"),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "apps",
        plural: "deployments",
        kind: "Deployment",
        short_names: &["deploy"],
        categories: ALL,
        strategy: controller(
            Some(Builtin::Workload),
            "{}",
            DEPLOYMENT,
            "/spec/template",
            ALWAYS_RESTART,
        ),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "apps",
        plural: "statefulsets",
        kind: "StatefulSet",
        short_names: &["sts"],
        categories: ALL,
        strategy: controller(
            Some(Builtin::Workload),
            r#"{"replicas": 0, "availableReplicas": 0}"#,
            STATEFUL_SET,
            "/spec/template",
            ALWAYS_RESTART,
        ),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "apps",
        plural: "replicasets",
        kind: "ReplicaSet",
        short_names: &["rs"],
        categories: ALL,
        field_labels: &[BuiltinLabel::number("status.replicas", "status.replicas")],
        strategy: controller(
            Some(Builtin::Workload),
            r#"{"replicas": 0}"#,
            REPLICA_SET,
            "/spec/template",
            ALWAYS_RESTART,
        ),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "apps",
        plural: "daemonsets",
        kind: "DaemonSet",
        short_names: &["ds"],
        categories: ALL,
        strategy: controller(
            Some(Builtin::Workload),
            r#"{"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0}"#,
            DAEMON_SET,
            "/spec/template",
            ALWAYS_RESTART,
        ),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "events.k8s.io",
        plural: "events",
        kind: "Event",
        short_names: &["ev"],
        strategy: Strategy {
            create_on_update: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        short_names: &["hpa"],
        categories: ALL,
        strategy: Strategy {
            defaults: HORIZONTAL_POD_AUTOSCALER,
            ..with_status(r#"{"desiredReplicas": 0}"#)
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "batch",
        plural: "jobs",
        kind: "Job",
        categories: ALL,
        field_labels: &[BuiltinLabel::number(
            "status.successful",
            "status.succeeded",
        )],
        strategy: controller(Some(Builtin::Job), "{}", JOB, "/spec/template", JOB_RESTART),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "batch",
        plural: "cronjobs",
        kind: "CronJob",
        short_names: &["cj"],
        categories: ALL,
        strategy: controller(
            None,
            "{}",
            CRON_JOB,
            "/spec/jobTemplate/spec/template",
            JOB_RESTART,
        ),
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "networking.k8s.io",
        plural: "ingresses",
        kind: "Ingress",
        short_names: &["ing"],
        strategy: Strategy {
            generation: true,
            ..with_status(r#"{"loadBalancer": {}}"#)
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "networking.k8s.io",
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        short_names: &["netpol"],
        strategy: Strategy {
            generation: true,
            defaults: NETWORK_POLICY,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "policy",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        short_names: &["pdb"],
        strategy: Strategy {
            generation: true,
            ..with_status(
                r#"{"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0,
                    "expectedPods": 0}"#,
            )
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "rbac.authorization.k8s.io",
        plural: "roles",
        kind: "Role",
        strategy: Strategy {
            names: NameRule::PathSegment,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "rbac.authorization.k8s.io",
        plural: "rolebindings",
        kind: "RoleBinding",
        strategy: Strategy {
            rules: Some(Builtin::RoleBinding),
            names: NameRule::PathSegment,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
    BuiltinKind {
        group: "rbac.authorization.k8s.io",
        plural: "clusterroles",
        kind: "ClusterRole",
        strategy: Strategy {
            names: NameRule::PathSegment,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        group: "rbac.authorization.k8s.io",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        strategy: Strategy {
            rules: Some(Builtin::RoleBinding),
            names: NameRule::PathSegment,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        group: "storage.k8s.io",
        plural: "storageclasses",
        kind: "StorageClass",
        short_names: &["sc"],
        strategy: Strategy {
            defaults: &[
                FieldDefault::always("reclaimPolicy", "\"Delete\""),
                FieldDefault::always("volumeBindingMode", "\"Immediate\""),
            ],
            ..Strategy::GENERIC
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        group: "apiextensions.k8s.io",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
        strategy: Strategy {
            rules: Some(Builtin::CustomResourceDefinition),
            status: true,
            generation: true,
            requires_resource_version: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::CLUSTER
    },
    BuiltinKind {
        group: "coordination.k8s.io",
        plural: "leases",
        kind: "Lease",
        strategy: Strategy {
            create_on_update: true,
            ..Strategy::GENERIC
        },
        ..BuiltinKind::NAMESPACED
    },
];

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn conditions(when: When) -> Vec<&'static str> {
        match when {
            When::Equals(_, value) => vec![value],
            _ => Vec::new(),
        }
    }

    #[test]
    fn every_default_and_initial_status_is_json() {
        for kind in &BUILTINS {
            let strategy = &kind.strategy;
            let texts = strategy
                .defaults
                .iter()
                .flat_map(|d| [vec![d.value], conditions(d.when)].concat())
                .chain(strategy.initial_status);
            for text in texts {
                assert!(
                    serde_json::from_str::<Value>(text).is_ok(),
                    "{}: {text}",
                    kind.plural
                );
            }
        }
    }

    #[test]
    fn each_group_and_plural_is_served_once() {
        let mut keys: Vec<(&str, &str)> = BUILTINS.iter().map(|k| (k.group, k.plural)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), BUILTINS.len());
    }

    #[test]
    fn pod_controllers_have_templates_and_restart_policies() {
        for kind in BUILTINS
            .iter()
            .filter(|k| k.strategy.pod_template.is_some())
        {
            assert!(kind.strategy.generation, "{}", kind.plural);
            assert!(
                !kind.strategy.restart_policies.is_empty(),
                "{}",
                kind.plural
            );
        }
    }
}
