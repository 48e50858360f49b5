//! The pod's status as Kubernetes reports it, from what the supervisors observed.

use super::*;

use tessera_model::kube::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition, PodIp, PodStatus,
};

impl Sandbox {
    /// The pod's status as Kubernetes reports it.
    pub fn status(&self) -> PodStatus {
        let mut statuses = Vec::new();
        let mut all_ready = true;
        for s in &self.supervised {
            let o = s.observed.lock().unwrap().clone();
            let running = o.pid.is_some();
            let ready = running && s.ready;
            all_ready &= ready;
            let state = if running {
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: o.started_at.clone(),
                    }),
                    ..Default::default()
                }
            } else if let Some(code) = o.done {
                terminated(code, if code == 0 { "Completed" } else { "Error" })
            } else {
                let (reason, message) = o
                    .waiting
                    .clone()
                    .unwrap_or(("ContainerCreating".into(), String::new()));
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason),
                        message: Some(message),
                    }),
                    ..Default::default()
                }
            };
            statuses.push(ContainerStatus {
                name: s.name.clone(),
                image: Some(s.image.clone()),
                ready,
                started: Some(running),
                restart_count: o.restarts as i32,
                state: Some(state),
                last_state: o
                    .last_exit
                    .as_ref()
                    .map(|(code, reason)| terminated(*code, reason)),
                ..Default::default()
            });
        }
        let ip = self.info.ip.to_string();
        PodStatus {
            phase: Some("Running".into()),
            host_ip: Some("127.0.0.1".into()),
            pod_ip: Some(ip.clone()),
            pod_ips: vec![PodIp { ip }],
            conditions: vec![
                PodCondition::of("PodScheduled", true),
                PodCondition::of("Initialized", true),
                PodCondition::of("ContainersReady", all_ready),
                PodCondition::of("Ready", all_ready),
            ],
            init_container_statuses: self
                .init_done
                .iter()
                .map(|n| ContainerStatus {
                    name: n.clone(),
                    ready: true,
                    state: Some(terminated(0, "Completed")),
                    ..Default::default()
                })
                .collect(),
            container_statuses: statuses,
            ..Default::default()
        }
    }
}

/// A terminated container's state.
pub(super) fn terminated(code: i32, reason: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
