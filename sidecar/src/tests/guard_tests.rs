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
        let verdict = g.verify(a, b);
        let ok = verdict.is_ok();
        if v["label"] == "hit" {
            hits += 1;
            kept += usize::from(ok);
            if let Err(why) = verdict {
                leaks.push(format!("refused ({}): {a} / {b}", why.as_str()));
                if std::env::var("SEMGATE_GUARD_DEBUG").is_ok() {
                    leaks.push(format!("    {}\n    {}", g.explain(a), g.explain(b)));
                }
            }
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

/// Each family of near-miss the structural checks exist for, with cases written for these
/// tests: every pair must be refused in both directions (the reason may differ by direction).
#[test]
fn refuses_near_misses_of_every_family() {
    let g = guard();
    let families: &[(&str, &[(&str, &str)])] = &[
        (
            "swap around any frame word",
            &[
                ("How many yen can I exchange dollars for?", "How many dollars can I exchange yen for?"),
                ("Exchange my euros for pesos", "Exchange my pesos for euros"),
                ("Draw a fox chasing a rabbit", "Draw a rabbit chasing a fox"),
                ("How should a seller review a buyer?", "How should a buyer review a seller?"),
                ("How do I rebase main onto develop?", "How do I rebase develop onto main?"),
                ("How many ounces is 3 cups?", "How many cups is 3 ounces?"),
                (
                    "Write a story where the teacher learns from the student",
                    "Write a story where the student learns from the teacher",
                ),
            ],
        ),
        ("range swap", &[("List prime numbers from 10 up to 50", "List prime numbers from 50 up to 10")]),
        (
            "opposite superlative or ordering",
            &[
                ("Which is the cheapest flight to Rome?", "Which is the most expensive flight to Rome?"),
                ("Show my most recent orders", "Show my oldest orders"),
                ("What was the highest temperature this week?", "What was the lowest temperature this week?"),
                ("Sort the results by newest first", "Sort the results by oldest first"),
                ("Who came first in the race?", "Who came last in the race?"),
                ("Find the longest word in a sentence", "Find the shortest word in a sentence"),
            ],
        ),
        (
            "comparative",
            &[
                ("Pick a city with more fog and less sun", "Pick a city with less fog and more sun"),
                ("Is a heavier bike faster downhill?", "Is a lighter bike faster downhill?"),
            ],
        ),
        (
            "one lowercase name for another",
            &[
                ("how do I read a csv file with pandas", "how do I read a csv file with polars"),
                ("install numpy with pip", "install numpy with conda"),
                ("set up eslint for my project", "set up prettier for my project"),
            ],
        ),
        (
            "different goal or constraint",
            &[
                ("Suggest a vegan dessert for a party", "Suggest a vegetarian dessert for a party"),
                ("Suggest a vegan dessert for a party", "Suggest a vegan dinner for a party"),
            ],
        ),
        (
            "time and tense",
            &[
                (
                    "When was the next solar eclipse visible in Europe?",
                    "When will the next solar eclipse be visible in Europe?",
                ),
                ("Summarise our revenue last quarter", "Summarise our revenue next quarter"),
                ("What did the company announce yesterday?", "What will the company announce tomorrow?"),
            ],
        ),
        (
            "audience or format",
            &[
                ("Show the results as a table", "Show the results as bullets"),
                ("Write a playful caption for this watch", "Write a luxurious caption for this watch"),
            ],
        ),
        (
            "attribute",
            &[
                ("Describe this floral summer dress", "Describe this polka-dot summer dress"),
                ("Write a caption for a turtleneck sweater", "Write a caption for a cardigan sweater"),
                ("Describe a faucet in brushed nickel", "Describe a faucet in polished chrome"),
            ],
        ),
        (
            "count",
            &[
                ("Describe a planet of the solar system", "Describe every planet of the solar system"),
                ("Translate each sentence into French", "Translate a sentence into French"),
            ],
        ),
        (
            "ordinal",
            &[
                ("What is the second largest city in Spain?", "What is the third largest city in Spain?"),
                ("Explain the first amendment", "Explain the 5th amendment"),
            ],
        ),
        (
            "negation without not",
            &[
                (
                    "Summarise the report but leave out the financials",
                    "Summarise the report but focus on the financials",
                ),
                ("Plan a trip that avoids toll roads", "Plan a trip that uses toll roads"),
                ("Make a salad without nuts", "Make a salad with nuts"),
            ],
        ),
    ];
    for (family, cases) in families {
        for (a, b) in *cases {
            assert!(
                g.verify(a, b).is_err(),
                "{family}: accepted {a:?} / {b:?}\n  {}\n  {}",
                g.explain(a),
                g.explain(b)
            );
            assert!(
                g.verify(b, a).is_err(),
                "{family}: accepted {b:?} / {a:?}\n  {}\n  {}",
                g.explain(b),
                g.explain(a)
            );
        }
    }
}

/// The same request written another way: number words, clock times, currency, time-zone and
/// country names and codes, synonyms, and a symmetric relation.
#[test]
fn normalises_what_paraphrases_write_differently() {
    let g = guard();
    let cases = [
        ("Is there a fee for returns after ten days?", "Is there a fee for returns after 10 days?"),
        ("Book a table for twenty five people", "Book a table for 25 people"),
        ("Set a reminder for 3 pm", "Set a reminder for 15:00"),
        ("Set a reminder for 3:30pm", "Set a reminder for 15:30"),
        ("Set a reminder for noon", "Set a reminder for 12 pm"),
        ("Convert 5000 yen to dollars", "Convert 5000 JPY to USD"),
        ("Convert 20 pounds sterling to euros", "Convert 20 GBP to EUR"),
        ("What is 9 am Eastern in London?", "What is 9 am ET in London?"),
        ("What is 9 am Pacific time in Tokyo?", "What is 9 am PST in Tokyo?"),
        ("Do you ship to the UK?", "Do you ship to the United Kingdom?"),
        ("Do you ship to the USA?", "Do you ship to the United States?"),
        ("How do I delete my account?", "How do I remove my account?"),
        ("Write a caption for a large ceramic vase", "Write a caption for a big ceramic vase"),
        ("What's the distance between Madrid and Barcelona?", "What's the distance between Barcelona and Madrid?"),
        ("What's the weather tomorrow in Oslo?", "What will the weather be tomorrow in Oslo?"),
    ];
    for (a, b) in cases {
        assert_eq!(g.verify(a, b), Ok(()), "{a} / {b}\n  {}\n  {}", g.explain(a), g.explain(b));
        assert_eq!(g.verify(b, a), Ok(()), "{b} / {a}");
    }
    // Normalising never merges different values.
    assert!(g.verify("Set a reminder for 3 pm", "Set a reminder for 3 am").is_err());
    assert!(g.verify("Set a reminder for 3 pm", "Set a reminder for 13:00").is_err());
    assert!(g.verify("What is 9 am Eastern in London?", "What is 9 am Pacific in London?").is_err());
    assert!(g.verify("Convert 5000 yen to dollars", "Convert 5000 CNY to USD").is_err());
    assert!(g.verify("Book a table for twenty five people", "Book a table for 26 people").is_err());
}

#[test]
fn span_swaps_need_a_frame_that_orders() {
    let s = |t: &str| lemmas(&t.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    assert!(swapped_spans(&s("exchange dollars for yen"), &s("exchange yen for dollars")));
    assert!(swapped_spans(&s("flights from new york to london"), &s("flights from london to new york")));
    // "and" is symmetric; a list of modifiers has no frame.
    assert!(!swapped_spans(&s("distance between madrid and barcelona"), &s("distance between barcelona and madrid")));
    assert!(!swapped_spans(&s("long beige trench coat"), &s("trench coat beige long")));
}

#[test]
fn acronyms_spelled_out_in_the_other_text_match() {
    let g = guard();
    for (a, b) in [
        ("Best pizza places in NYC", "Best pizza places in New York City"),
        ("Which form asks for my DOB?", "Which form asks for my date of birth?"),
        (
            "Explain CI/CD for a Rails project",
            "Explain continuous integration and continuous delivery for a Rails project",
        ),
    ] {
        assert_eq!(g.verify(a, b), Ok(()), "{a} / {b}");
        assert_eq!(g.verify(b, a), Ok(()), "{b} / {a}");
    }
    // Initials that spell other words are another thing.
    assert!(g.verify("How far is LA from Boston?", "How far is Las Vegas from Boston?").is_err());
}

#[test]
fn crossed_words_around_a_verb_or_ordering_word_are_a_swap() {
    let g = guard();
    let t = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    // Roles around a verb, with other words between than the other text has.
    assert!(crossed_words(&t("an owl chasing a small mouse"), &t("a mouse chasing the owl")));
    assert!(crossed_words(&t("a teacher who learns from her student"), &t("a student who learns from her teacher")));
    assert!(crossed_words(&t("plan more museums and fewer hikes"), &t("plan more hikes and fewer museums")));
    // A clause moved to the other end keeps nothing between the crossed words.
    assert!(!crossed_words(&t("in rome for 2 days what should i see"), &t("what should i see in rome for 2 days")));
    // "for", "in", nouns that are verbs too ("set", "cover") and the copula are no frame.
    assert!(!crossed_words(
        &t("product page text for adidas ultraboost core black colourway"),
        &t("describe these adidas ultraboost in core black for the product page")
    ));
    assert!(!crossed_words(&t("blue ceramic plates set of 4"), &t("a 4 piece set of blue ceramic plates")));
    assert!(!crossed_words(&t("how many feet are in a mile"), &t("a mile is how many feet long")));
    for (a, b) in [
        ("Write a story where a robot adopts a child", "Write a story where a child adopts a robot"),
        ("Can a landlord evict a tenant for late rent?", "Can a tenant evict a landlord for late rent?"),
        ("Does the class Dog inherit from Animal?", "Does the class Animal inherit from Dog?"),
    ] {
        assert!(g.verify(a, b).is_err(), "{a} / {b}");
        assert!(g.verify(b, a).is_err(), "{b} / {a}");
    }
}

#[test]
fn what_a_how_many_question_counts_is_a_role() {
    let g = guard();
    assert_eq!(
        g.verify("How many teaspoons are in a tablespoon?", "How many tablespoons are in a teaspoon?"),
        Err(Rejection::Swap)
    );
    assert_eq!(g.verify("How many feet are in a mile?", "A mile is how many feet long?"), Ok(()));
}

#[test]
fn singular_against_plural_or_any_against_all_is_a_quantity() {
    let g = guard();
    for (a, b) in [
        ("Fix the failing test in this file", "Fix the failing tests in this file"),
        ("Translate this sentence into French", "Translate these sentences into French"),
        ("Does any planet have rings?", "Do all planets have rings?"),
        ("How do I rename a file in bash?", "How do I rename many files in bash?"),
        ("What is a fun name for a puppy?", "What are some fun names for puppies?"),
    ] {
        assert_eq!(g.verify(a, b), Err(Rejection::Quantity), "{a} / {b}");
        assert_eq!(g.verify(b, a), Err(Rejection::Quantity), "{b} / {a}");
    }
    // "How many" asks for a number, not for every thing.
    assert_eq!(g.verify("What is 1 mile in metres?", "How many meters are in 1 mile?"), Ok(()));
}

#[test]
fn the_question_auxiliary_and_the_perfect_carry_tense() {
    let g = guard();
    assert_eq!(g.verify("When does my subscription renew?", "When did my subscription renew?"), Err(Rejection::Tense));
    assert_eq!(
        g.verify("Who has won the most Oscars so far?", "Who will win the most Oscars this year?"),
        Err(Rejection::Tense)
    );
    assert_eq!(
        g.verify("Who won the Nobel Prize in physics recently?", "Who is expected to win the Nobel Prize in physics?"),
        Err(Rejection::Tense)
    );
}

#[test]
fn length_and_speed_words_are_requests_not_fillers() {
    let g = guard();
    assert!(g.verify("Explain recursion briefly", "Explain recursion in detail").is_err());
    assert!(g.verify("Make this code use less memory", "Make this code run faster").is_err());
    // ... and "brief" / "short" are one request.
    assert_eq!(
        g.verify(
            "Write a short caption for a lavender-scented bath bomb.",
            "Brief caption for a bath bomb with a lavender scent."
        ),
        Ok(())
    );
}

#[test]
fn one_word_changed_in_place_is_a_different_request() {
    let g = guard();
    for (a, b) in [
        ("How do I move money to my savings account?", "How do I move money from my savings account?"),
        ("Can I bring food on the plane?", "Can I bring food off the plane?"),
        ("What should I wear to a wedding in summer?", "What should I wear to a wedding in winter?"),
        ("Write a poem about rain", "Write a poem about snow"),
        ("Search emails from my boss", "Search emails to my boss"),
    ] {
        assert!(g.verify(a, b).is_err(), "{a} / {b}");
        assert!(g.verify(b, a).is_err(), "{b} / {a}");
    }
    // Names of one thing, question words and modals change freely.
    for (a, b) in [
        ("How do I use async functions in JS?", "How do I use async functions in JavaScript?"),
        ("How much is 1000 yen in dollars?", "How much is 1000 JPY in USD?"),
        ("How can I reset my password?", "How do I reset my password?"),
    ] {
        assert_eq!(g.verify(a, b), Ok(()), "{a} / {b}");
    }
}

/// The prepared path (the first stage and the lookup compare prepared texts) decides every
/// pair of the eval sets, both ways, as `verify` on the raw texts does, and a certain refusal
/// (`surely_refused`, a different number or unit key) is always a refusal.
#[test]
fn prepared_texts_decide_as_raw_texts_do() {
    let g = guard();
    let (mut pairs, mut certain) = (0, 0);
    for file in ["pairs.jsonl", "pairs_v2.jsonl", "pairs_v3.jsonl", "pairs_v4.jsonl"] {
        let path = format!("{}/eval/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).expect("eval set");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("jsonl");
            let (a, b) = (v["a"].as_str().unwrap_or(""), v["b"].as_str().unwrap_or(""));
            for (x, y) in [(a, b), (b, a)] {
                let (px, py) = (g.prepare(x), g.prepare(y));
                let raw = g.verify(x, y);
                assert_eq!(g.verify_prepared(&px, &py), raw, "{x} / {y}");
                if g.surely_refused(&px, &py) {
                    certain += 1;
                    assert!(raw.is_err(), "a certain refusal the guard accepts: {x} / {y}");
                }
                pairs += 1;
            }
        }
    }
    assert!(pairs > 2000 && certain > 100, "{pairs} pairs, {certain} certain refusals");
}

/// One of a kind against many of it, whatever marks the many: a quantifier, a collection
/// ("a list of", "a folder of"), a determiner on the singular side ("this", "the"), or a
/// partitive ("one of the moons" / "the moons"). Both directions are refused.
#[test]
fn quantity_marked_by_collections_determiners_and_partitives() {
    let g = guard();
    let refused = [
        ("Write a regex that matches a phone number.", "Write a regex that matches a list of phone numbers."),
        ("How do I crop a photo with ImageMagick?", "How do I crop a folder of photos with ImageMagick?"),
        ("Mute this channel.", "Mute all channels."),
        ("Restart the worker.", "Restart every idle worker."),
        ("Tell me about one of the rings of Saturn.", "Tell me about the rings of Saturn."),
    ];
    for (a, b) in refused {
        assert!(g.verify(a, b).is_err(), "{a} / {b}\n  {}\n  {}", g.explain(a), g.explain(b));
        assert!(g.verify(b, a).is_err(), "{b} / {a}");
    }
    // A collection word used as a modifier ("a number list"), both sides plural, or both
    // sides universal: no difference of quantity.
    let same = [
        ("How do I sort a list of numbers?", "How do I sort a number list?"),
        ("How do I delete all files in a folder?", "How do I delete every file in a folder?"),
    ];
    for (a, b) in same {
        assert!(!quantity_differs(&toks(a), &toks(b)) && !quantity_differs(&toks(b), &toks(a)), "{a} / {b}");
        assert!(!partitive_differs(&toks(a), &toks(b)) && !partitive_differs(&toks(b), &toks(a)), "{a} / {b}");
    }
}

fn toks(t: &str) -> Vec<String> {
    t.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Two words that traded places with every other word in place change the roles ("is a whale a
/// fish" / "is a fish a whale"); a symmetric word between them does not ("cats and dogs").
#[test]
fn a_transposition_of_two_words_is_a_swap() {
    assert!(transposed(&toks("is a whale a fish"), &toks("is a fish a whale")));
    assert!(transposed(&toks("pour the water into the rice"), &toks("pour the rice into the water")));
    assert!(!transposed(&toks("compare cats and dogs"), &toks("compare dogs and cats")));
    assert!(!transposed(&toks("mix flour with water"), &toks("mix water with flour")));
    assert!(!transposed(&toks("red wine glass"), &toks("wine red glass")), "neighbours: a reordering of modifiers");
    let g = guard();
    assert_eq!(g.verify("Is a whale a fish or a mammal?", "Is a fish a whale or a mammal?"), Err(Rejection::Swap));
    assert_eq!(
        g.verify("What's the difference between TCP and UDP?", "What's the difference between UDP and TCP?"),
        Ok(())
    );
}

/// The two ends of an order in time: the earliest against the most recent.
#[test]
fn earliest_and_most_recent_are_opposites() {
    let g = guard();
    for (a, b) in [
        ("List my earliest invoices.", "List my most recent invoices."),
        ("Show the oldest comments first.", "Show the latest comments first."),
        ("What was the first episode about?", "What was the final episode about?"),
    ] {
        assert!(g.verify(a, b).is_err(), "{a} / {b}");
        assert!(g.verify(b, a).is_err(), "{b} / {a}");
    }
}

/// "All X but Y" excludes Y as "except" does.
#[test]
fn all_but_is_an_exclusion() {
    let g = guard();
    assert_eq!(
        g.verify("Index all tables but the audit log.", "Index all tables and the audit log."),
        Err(Rejection::Negation)
    );
}
