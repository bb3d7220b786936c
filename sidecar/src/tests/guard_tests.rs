//! Unit tests of the guard, on the hard cases the design names and on the eval set's dev split.

use super::*;

fn guard() -> GuardConfig {
    GuardConfig::default()
}

#[test]
fn refuses_the_measured_near_misses() {
    let g = guard();
    let cases = [
        (
            "Write a caption for this red leather handbag",
            "Write a caption for this blue leather handbag",
            Rejection::Colour,
        ),
        ("Convert 100 USD to EUR", "Convert 100 EUR to USD", Rejection::OperandOrder),
        ("Flights from London to New York", "Flights from New York to London", Rejection::OperandOrder),
        ("Convert 100 USD to EUR", "Convert 200 USD to EUR", Rejection::Number),
        ("Convert 100 USD to EUR", "Convert 100 GBP to EUR", Rejection::Unit),
        (
            "Which items can't be shipped internationally?",
            "Which items can be shipped internationally?",
            Rejection::Negation,
        ),
        ("How do I reverse a list in Python?", "How do I reverse a list in Rust?", Rejection::Entity),
        ("Sort the array ascending", "Sort the array descending", Rejection::Opposite),
        ("Describe the small backpack", "Describe the large backpack", Rejection::Size),
        ("Is 1.5 km longer than 1 mile?", "Is 1 mile longer than 1.5 km?", Rejection::OperandOrder),
        ("Print to the console in Python 3", "Print to the console in Python 2", Rejection::Number),
    ];
    for (a, b, why) in cases {
        assert_eq!(g.verify(a, b), Err(why.clone()), "{a} / {b}");
        assert_eq!(g.verify(b, a), Err(why), "{b} / {a}");
    }
}

#[test]
fn lets_true_paraphrases_through() {
    let g = guard();
    let cases = [
        ("How do I get a refund?", "What is your return policy for getting my money back?"),
        ("How do I reverse a list in Python?", "In Python, how can I flip the order of elements in a list?"),
        ("How many euros is 100 US dollars?", "Convert 100 USD to EUR"),
        ("Is there a charge for thirty day returns?", "Do 30 day returns cost anything?"),
        ("Caption this iphone case", "Write a caption for this iPhone case"),
        (
            "Can I change my plan from monthly to annual billing?",
            "I want to switch from paying monthly to annual billing, is that possible?",
        ),
    ];
    for (a, b) in cases {
        assert_eq!(g.verify(a, b), Ok(()), "{a} / {b}");
    }
}

#[test]
fn disabled_guard_accepts_everything() {
    let g = GuardConfig { enabled: false, ..guard() };
    assert_eq!(g.verify("Convert 100 USD to EUR", "Convert 100 EUR to USD"), Ok(()));
}

#[test]
fn numbers_are_normalised() {
    let g = guard();
    assert_eq!(g.verify("Ship 1,000 units", "Ship 1000 units"), Ok(()));
    assert_eq!(g.verify("It costs $50", "It costs 50 dollars"), Ok(()));
    assert_eq!(g.verify("Meet at 3pm", "Meet at 3 pm"), Ok(()));
    assert_eq!(g.verify("Meet at 3pm", "Meet at 4pm"), Err(Rejection::Number));
    // A comma after a number ends the number ("item 42, please").
    assert_eq!(
        g.verify("What is the warranty on item b32ae248?", "What is the warranty on item b32ae248, please?"),
        Ok(())
    );
}

/// On the dev split: the guard must refuse nearly every labeled near-miss and keep most
/// paraphrases (the similarity threshold, tested with the model, does the rest).
#[test]
fn dev_split_of_the_eval_set() {
    let (recall, refusal) = guard_on_split("dev");
    assert!(refusal >= 0.97, "guard refuses only {refusal:.3} of near-misses");
    assert!(recall >= 0.85, "guard keeps only {recall:.3} of paraphrases");
}

/// The held-out split: the rules were tuned on dev only; this reports how they generalise.
#[test]
fn test_split_of_the_eval_set() {
    let (recall, refusal) = guard_on_split("test");
    assert!(refusal >= 0.90, "guard refuses only {refusal:.3} of held-out near-misses");
    assert!(recall >= 0.75, "guard keeps only {recall:.3} of held-out paraphrases");
}

fn guard_on_split(split: &str) -> (f64, f64) {
    let g = guard();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/eval/pairs.jsonl")).expect("eval set");
    let (mut hits, mut kept, mut misses, mut refused) = (0, 0, 0, 0);
    let mut leaks = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("jsonl");
        if v["split"] != split {
            continue;
        }
        let (a, b) = (v["a"].as_str().unwrap_or(""), v["b"].as_str().unwrap_or(""));
        let ok = g.verify(a, b).is_ok();
        if v["label"] == "hit" {
            hits += 1;
            kept += usize::from(ok);
        } else {
            misses += 1;
            refused += usize::from(!ok);
            if ok {
                leaks.push(format!("{} [{}] {a} / {b}", v["id"], v["kind"]));
            }
        }
    }
    let recall = kept as f64 / hits as f64;
    let refusal = refused as f64 / misses as f64;
    println!("{split}: guard keeps {kept}/{hits} paraphrases ({recall:.3}), refuses {refused}/{misses} near-misses ({refusal:.3})");
    for l in &leaks {
        println!("  leak: {l}");
    }
    (recall, refusal)
}
