//! The Chroma adapter's JSON mapping, and its failures, without a Chroma server (the round
//! trip against a real one is tests/test_chroma.py).

use super::*;

fn rec() -> Record {
    Record {
        id: 42,
        namespace: "t1|gpt".into(),
        text: "how do I reset my password".into(),
        response: br#"{"status":200,"body_b64":"QQ=="}"#.to_vec(),
        vector: vec![0.6, 0.8],
        created_ms: 1_000,
        expires_ms: 61_000,
    }
}

/// A store that was never connected: enough for the checks made before any request.
fn offline(dim: usize) -> ChromaStore {
    ChromaStore {
        agent: ureq::Agent::new_with_defaults(),
        api: "http://127.0.0.1:1/api/v2".into(),
        collection_id: "c".into(),
        dim,
        last_sweep_ms: AtomicU64::new(0),
    }
}

#[test]
fn a_record_becomes_one_upsert_with_its_fields_in_metadata() {
    let body = upsert_body(&rec()).unwrap();
    assert_eq!(
        body,
        json!({
            "ids": ["42"],
            "embeddings": [[0.6f32, 0.8f32]],
            "documents": ["how do I reset my password"],
            "metadatas": [{
                "namespace": "t1|gpt",
                "created_ms": 1000,
                "expires_ms": 61000,
                "response": r#"{"status":200,"body_b64":"QQ=="}"#,
            }],
        })
    );
}

#[test]
fn a_response_that_is_not_utf8_is_refused_not_mangled() {
    let r = Record { response: vec![0xff, 0xfe], ..rec() };
    assert!(matches!(upsert_body(&r), Err(IndexError::Backend(m)) if m.contains("UTF-8")));
}

#[test]
fn a_query_asks_for_live_records_of_one_namespace() {
    let body = query_body("t1|gpt", &[1.0, 0.0], 5, 2_000);
    assert_eq!(body["n_results"], 5);
    assert_eq!(body["query_embeddings"], json!([[1.0, 0.0]]));
    assert_eq!(body["where"], json!({"$and": [{"namespace": "t1|gpt"}, {"expires_ms": {"$gt": 2000}}]}));
    assert_eq!(sweep_body(2_000), json!({"where": {"expires_ms": {"$lte": 2000}}}));
    // Far-future times stay within Chroma's i64 metadata.
    assert_eq!(query_body("n", &[1.0], 1, u64::MAX)["where"]["$and"][1]["expires_ms"]["$gt"], i64::MAX);
}

#[test]
fn an_answer_maps_back_to_records_best_first_with_score_one_minus_distance() {
    // The shape chromadb 1.5 answers a query with (distances ascending, one list per query).
    let answer = json!({
        "ids": [["7", "42"]],
        "embeddings": null,
        "documents": [["reset my password", "how do I reset my password"]],
        "uris": null,
        "metadatas": [[
            {"namespace": "t1|gpt", "created_ms": 5, "expires_ms": 9, "response": "{\"a\":1}"},
            {"namespace": "t1|gpt", "created_ms": 1000, "expires_ms": 61000, "response": r#"{"status":200,"body_b64":"QQ=="}"#},
        ]],
        "distances": [[0.25, 0.0]],
        "include": ["distances", "documents", "metadatas"],
    });
    let got = parse_query(answer).unwrap();
    assert_eq!(got.iter().map(|c| c.record.id).collect::<Vec<_>>(), vec![42, 7]);
    assert_eq!(got[0].score, 1.0);
    assert_eq!(got[1].score, 0.75);
    assert_eq!(got[0].record, Record { vector: Vec::new(), ..rec() });
}

#[test]
fn records_semgate_did_not_write_are_skipped_and_an_empty_answer_is_no_candidates() {
    let answer = json!({
        "ids": [["not-a-number", "3", "4"]],
        "documents": [["x", "y", "z"]],
        "metadatas": [[
            {"namespace": "n", "created_ms": 1, "expires_ms": 2, "response": "{}"},
            null,
            {"namespace": "n", "created_ms": 1, "expires_ms": 2, "response": "{}"},
        ]],
        "distances": [[0.1, 0.1, 0.2]],
        "include": ["distances", "documents", "metadatas"],
    });
    let got = parse_query(answer).unwrap();
    assert_eq!(got.iter().map(|c| c.record.id).collect::<Vec<_>>(), vec![4]);
    let empty = json!({"ids": [[]], "documents": [[]], "metadatas": [[]], "distances": [[]], "include": []});
    assert!(parse_query(empty).unwrap().is_empty());
    assert!(matches!(parse_query(json!({"error": "x"})), Err(IndexError::Backend(_))));
}

#[test]
fn a_collection_of_another_model_or_space_is_refused() {
    let ok = json!({
        "id": "4f2a", "name": "semgate",
        "metadata": {"semgate_model": "hashing-384", "semgate_dim": 384},
        "configuration_json": {"hnsw": {"space": "cosine"}, "spann": null},
    });
    assert_eq!(check_collection(&ok, "semgate", "hashing-384", 384).unwrap(), "4f2a");
    let err = check_collection(&ok, "semgate", "all-MiniLM-L6-v2", 384).unwrap_err().to_string();
    assert!(err.contains("all-MiniLM-L6-v2") && err.contains("--chroma-collection"), "{err}");
    let foreign = json!({"id": "1", "metadata": null, "configuration_json": {"hnsw": {"space": "cosine"}}});
    let err = check_collection(&foreign, "semgate", "hashing-384", 384).unwrap_err().to_string();
    assert!(err.contains("not created by semgate"), "{err}");
    let l2 = json!({"id": "1", "metadata": ok["metadata"], "configuration_json": {"hnsw": {"space": "l2"}}});
    assert!(check_collection(&l2, "semgate", "hashing-384", 384).unwrap_err().to_string().contains("cosine"));
}

#[test]
fn chroma_errors_keep_their_message() {
    let body =
        r#"{"error":"InvalidArgumentError","message":"Collection expecting embedding with dimension of 3, got 2"}"#;
    assert_eq!(error_message(body), "Collection expecting embedding with dimension of 3, got 2");
    assert_eq!(error_message("plain text"), "plain text");
}

#[test]
fn wrong_dimensions_and_k_zero_are_answered_without_a_request() {
    let store = offline(2);
    assert!(matches!(store.search("n", &[1.0], 3, 0), Err(IndexError::Dimension { got: 1, want: 2 })));
    assert!(matches!(store.insert(Record { vector: vec![1.0], ..rec() }), Err(IndexError::Dimension { .. })));
    assert!(store.search("n", &[1.0, 0.0], 0, 0).unwrap().is_empty());
}

#[test]
fn an_unreachable_chroma_is_a_clear_startup_error() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let err = ChromaStore::connect("http://127.0.0.1:1", "semgate", "hashing-384", 384, 0).err().unwrap().to_string();
    assert!(err.contains("Chroma at http://127.0.0.1:1 is unreachable"), "{err}");
    // A failed request is an error value, not a panic, and counts as an empty store.
    let store = offline(2);
    assert!(matches!(store.search("n", &[1.0, 0.0], 3, 0), Err(IndexError::Backend(_))));
    assert_eq!(store.len(), 0);
}
