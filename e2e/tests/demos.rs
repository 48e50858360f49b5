//! `tessera demo auto-mtls` and `tessera demo https` on a real mesh print the seeds'
//! verification output: each matrix of seed 002 as the seed prints it, and seed 000's
//! page / failed handshake from the app and proxy containers.

use tessera_e2e::seed002;
use tessera_e2e::transcript::matches_seed;
use tessera_e2e::Mesh;

/// The demo's sections: title line → the lines after the command it shows.
fn sections(out: &str) -> Vec<(String, String)> {
    let mut out_sections = Vec::new();
    for chunk in out.split("\n== ").skip(1) {
        let (title, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let body = match body.split_once('\n') {
            Some((first, rest)) if first.starts_with("$ ") => rest,
            _ => body,
        };
        out_sections.push((title.to_string(), body.to_string()));
    }
    out_sections
}

#[test]
fn demos_print_the_seeds_verification_output() {
    let mesh = Mesh::up("demos", &[]);

    for api in ["v1beta1", "v1alpha1"] {
        let out = mesh.ok(&format!("tessera demo auto-mtls --api {api}"));
        let s = sections(&out);
        assert_eq!(s.len(), 5, "five steps:\n{out}");
        let matrices = [
            (0, seed002::SEED_PERMISSIVE),
            (2, seed002::SEED_STRICT),
            (3, seed002::SEED_PLAINTEXT),
        ];
        for (i, seed) in matrices {
            if let Err(e) = matches_seed(&s[i].1, seed, seed002::LOAD_BALANCED) {
                panic!("{api}: step {:?}: {e}", s[i].0);
            }
        }
        // The last step ends with the 503's explanation after the matrix.
        let (matrix, why) = s[4].1.split_once("Why (").expect("the 503 is explained");
        if let Err(e) = matches_seed(matrix, seed002::SEED_DR_OVERRIDE, seed002::LOAD_BALANCED) {
            panic!("{api}: DestinationRule step: {e}");
        }
        assert!(why.contains("WRONG_VERSION_NUMBER"), "{why}");
        // Ten requests to the half-migrated service: both kinds of answer.
        let ten = &s[1].1;
        assert_eq!(ten.matches("response code: 200").count(), 10, "{ten}");
        let mtls = ten
            .matches("URI=spiffe://cluster.local/ns/full/sa/sleep")
            .count();
        assert!((1..10).contains(&mtls), "{ten}");
    }

    let out = mesh.ok("tessera demo https");
    let s = sections(&out);
    assert_eq!(s.len(), 3, "three steps:\n{out}");
    assert_eq!(
        s[0].1.matches("<h1>Welcome to nginx!</h1>").count(),
        2,
        "{out}"
    );
    assert_eq!(
        s[1].1.matches("<h1>Welcome to nginx!</h1>").count(),
        2,
        "{out}"
    );
    // Mesh-wide STRICT: the page from sleep, a refused handshake from istio-proxy.
    let (from_sleep, from_proxy) = s[2]
        .1
        .split_once("-c istio-proxy")
        .expect("both containers");
    assert!(from_sleep.contains("<h1>Welcome to nginx!</h1>"), "{out}");
    assert!(
        !from_proxy.contains("Welcome")
            && (from_proxy.contains("command terminated with exit code 56")
                || from_proxy.contains("command terminated with exit code 35")),
        "{out}"
    );
    // The demo put the mesh-wide mode back.
    let pa = mesh.sh("tessera get peerauthentications -n istio-system");
    assert!(pa.stdout.is_empty(), "{}", pa.both());
}
