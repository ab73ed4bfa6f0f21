//! The Job lifecycle as the Job controller and kubelet of Kubernetes 1.31+ run it, and deleting a
//! Job with each propagation policy.

use gitops_k8s::testing::FakeCluster;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

use super::{STUBBORN, cluster, eventually, from, wait_trapped};

fn job(name: &str, script: &str, extra: Value) -> Job {
    let mut job = json!({"metadata": {"name": name, "labels": {"team": "ci"}},
        "spec": {"template": {"metadata": {"labels": {"stage": name}}, "spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}]}}}});
    if let (Some(spec), Value::Object(extra)) = (job["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    from(job)
}

fn get_job(cluster: &FakeCluster, name: &str) -> Option<Value> {
    cluster.get("/apis/batch/v1", "jobs", "t", name)
}

/// The Job's conditions that are true, as `Type` or `Type/Reason`.
fn conditions(job: &Value) -> Vec<String> {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .map(|c| match c["reason"].as_str() {
            Some(r) if c["type"] != "SuccessCriteriaMet" && c["type"] != "Complete" => {
                format!("{}/{r}", c["type"].as_str().unwrap())
            }
            _ => c["type"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// The pods of Job `name`, found by the label the Job controller puts on them.
fn pods(cluster: &FakeCluster, name: &str) -> Vec<Value> {
    cluster
        .list("/api/v1", "pods", Some("t"))
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name)
        .collect()
}

async fn finished(cluster: &FakeCluster, name: &str) -> Value {
    let done = |j: &Value| {
        let c = conditions(j);
        c.iter().any(|c| c == "Complete" || c.starts_with("Failed"))
    };
    eventually("the Job finishes", || {
        get_job(cluster, name).is_some_and(|j| done(&j))
    })
    .await;
    get_job(cluster, name).unwrap()
}

#[tokio::test]
async fn a_job_gets_a_labelled_owned_pod_and_completes_as_kubernetes_says() {
    let (cluster, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client, "t");
    let made = jobs
        .create(
            &PostParams::default(),
            &job("ok", "sleep 1; echo done", json!({})),
        )
        .await
        .unwrap();
    let uid = made.metadata.uid.unwrap();
    eventually("the pod runs", || {
        pods(&cluster, "ok")
            .first()
            .is_some_and(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let running = get_job(&cluster, "ok").unwrap();
    assert_eq!(running["status"]["active"], 1);
    assert!(running["status"]["startTime"].is_string());
    assert!(conditions(&running).is_empty(), "{running}");
    let pod = &pods(&cluster, "ok")[0];
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("ok-") && name.len() == "ok-".len() + 5,
        "{name}"
    );
    let labels = &pod["metadata"]["labels"];
    for (k, v) in [
        ("batch.kubernetes.io/job-name", "ok"),
        ("job-name", "ok"),
        ("batch.kubernetes.io/controller-uid", uid.as_str()),
        ("controller-uid", uid.as_str()),
        ("stage", "ok"),
    ] {
        assert_eq!(labels[k], v, "label {k}");
    }
    assert_eq!(
        pod["metadata"]["ownerReferences"],
        json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "ok", "uid": uid,
                "controller": true, "blockOwnerDeletion": true}])
    );

    let done = finished(&cluster, "ok").await;
    assert_eq!(conditions(&done), ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(
        (
            done["status"]["succeeded"].clone(),
            done["status"]["active"].clone()
        ),
        (json!(1), json!(0))
    );
    assert!(done["status"]["completionTime"].is_string());
    let pod = &pods(&cluster, "ok")[0];
    assert_eq!(pod["status"]["phase"], "Succeeded");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
}

#[tokio::test]
async fn a_failed_pod_is_replaced_until_the_backoff_limit_then_the_job_fails() {
    let (cluster, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client, "t");
    let pp = PostParams::default();
    jobs.create(&pp, &job("once", "exit 3", json!({"backoffLimit": 0})))
        .await
        .unwrap();
    jobs.create(&pp, &job("twice", "exit 3", json!({"backoffLimit": 1})))
        .await
        .unwrap();
    let once = finished(&cluster, "once").await;
    assert_eq!(
        conditions(&once),
        [
            "FailureTarget/BackoffLimitExceeded",
            "Failed/BackoffLimitExceeded"
        ]
    );
    assert_eq!(once["status"]["failed"], 1);
    let pod = &pods(&cluster, "once")[0];
    assert_eq!(pod["status"]["phase"], "Failed");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    let twice = finished(&cluster, "twice").await;
    assert_eq!(twice["status"]["failed"], 2);
    assert_eq!(pods(&cluster, "twice").len(), 2, "one pod per attempt");
}

#[tokio::test]
async fn past_its_deadline_a_job_fails_and_its_pods_are_deleted() {
    let (cluster, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client, "t");
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            "sleep 30",
            json!({"activeDeadlineSeconds": 1, "backoffLimit": 0}),
        ),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let done = finished(&cluster, "slow").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        conditions(&done),
        ["FailureTarget/DeadlineExceeded", "Failed/DeadlineExceeded"]
    );
    let failed = done["status"]["conditions"][1].clone();
    assert_eq!(
        failed["message"],
        "Job was active longer than specified deadline"
    );
    assert!(
        pods(&cluster, "slow").is_empty(),
        "the pods are gone before Failed"
    );
    assert_eq!(cluster.running_processes(), 0);
}

#[tokio::test]
async fn deleting_a_job_orphans_its_pods_unless_asked_to_propagate() {
    let (cluster, client) = cluster().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "t");
    let pp = PostParams::default();
    for name in ["orphan", "background", "foreground"] {
        // Slow to stop: it ignores SIGTERM for its two seconds of grace.
        jobs.create(&pp, &job(name, STUBBORN, json!({})))
            .await
            .unwrap();
    }
    for name in ["orphan", "background", "foreground"] {
        wait_trapped(&client, "t", &format!("{name}-")).await;
    }

    // No policy: a batch/v1 Job orphans its pod, which runs on without its owner reference.
    jobs.delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    assert!(get_job(&cluster, "orphan").is_none());
    let orphan = pods(&cluster, "orphan");
    assert_eq!(orphan.len(), 1);
    assert!(
        orphan[0]["metadata"]["ownerReferences"].is_null(),
        "{}",
        orphan[0]
    );
    assert_eq!(orphan[0]["status"]["phase"], "Running");

    // Background: the Job goes at once, its pod after it.
    jobs.delete("background", &DeleteParams::background())
        .await
        .unwrap();
    assert!(get_job(&cluster, "background").is_none());
    eventually("the background pod goes", || {
        pods(&cluster, "background").is_empty()
    })
    .await;

    // Foreground: the Job stays, marked, until its pod is gone.
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    let answer = jobs.delete("foreground", &params).await.unwrap();
    let marked = answer.left().expect("the Job, still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_owned()])
    );
    eventually("the pod is stopping", || {
        pods(&cluster, "foreground")
            .first()
            .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string())
    })
    .await;
    assert!(
        get_job(&cluster, "foreground").is_some(),
        "while its pod stops"
    );
    eventually("the foreground Job goes after its pod", || {
        get_job(&cluster, "foreground").is_none()
    })
    .await;
    assert!(pods(&cluster, "foreground").is_empty());
    assert_eq!(cluster.running_processes(), 1, "only the orphan runs");
}
