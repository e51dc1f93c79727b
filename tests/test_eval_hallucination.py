"""POPE / CHAIR / AMBER metrics against values computed by hand (mm_unidpo.evaluation.hallucination)."""

from __future__ import annotations

import json
import math

import pytest

from mm_unidpo.evaluation.hallucination import (
    HIGHER_IS_BETTER,
    ObjectMatcher,
    amber_scores,
    chair_scores,
    coco_ground_truth,
    normalize_yes_no,
    pluralize,
    pope_scores,
)


@pytest.mark.parametrize("answer, expected", [
    ("Yes.", "yes"), ("yes", "yes"), ("YES", "yes"), ("Yes, there is a dog in the image.", "yes"),
    ("yes, there is…", "yes"), ("Correct.", "yes"), ("There is a dog.", "yes"), ("There's a dog.", "yes"),
    ("The image shows a dog.", "yes"), ("The answer is yes.", "yes"),
    ("No", "no"), ("no.", "no"), ("No, there isn't.", "no"), ("There is no dog.", "no"),
    ("There isn't a dog in the image.", "no"), ("I don't see a dog.", "no"), ("Not at all.", "no"),
    ("Nope", "no"), ("The answer is no.", "no"),
    ("", None), ("   ", None), (None, None), ("dog", None), ("Maybe.", None), ("I'm not sure.", None),
    ("Not sure", None), ("I don't know.", None), ("It might be a dog.", None), ("The sky is blue", None),
])
def test_normalize_yes_no(answer, expected):
    assert normalize_yes_no(answer) == expected


def test_pope_scores_by_hand():
    predictions = ["Yes.", "yes, there is a dog", "No", "There is no dog.", "I'm not sure.", "No, there isn't.",
                   "Yes", "maybe"]
    labels = ["yes", "no", "no", "yes", "yes", "no", "yes", "no"]
    # normalised: yes yes no no None no yes None -> TP 2 (0, 6), FP 1 (1), TN 2 (2, 5), FN 1 (3), ambiguous 2
    s = pope_scores(predictions, labels)
    assert (s.n, s.tp, s.fp, s.tn, s.fn, s.ambiguous) == (8, 2, 1, 2, 1, 2)
    assert s.accuracy == pytest.approx(4 / 8)
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(2 / 4)  # 4 positive labels; the ambiguous answer to one is a miss
    assert s.f1 == pytest.approx(4 / 7)  # 2 * (2/3)(1/2) / (2/3 + 1/2)
    assert s.yes_ratio == pytest.approx(3 / 8)  # of the PREDICTIONS; the labels' yes-ratio would be 0.5
    assert s.ambiguous_ratio == pytest.approx(2 / 8)
    assert s.ambiguous_answers == ["I'm not sure.", "maybe"]


def test_pope_scores_edge_cases():
    perfect = pope_scores(["Yes", "No"], ["yes", "no"])
    assert (perfect.accuracy, perfect.precision, perfect.recall, perfect.f1, perfect.yes_ratio) == (1, 1, 1, 1, 0.5)
    all_no = pope_scores(["no", "no"], ["yes", "no"])
    assert math.isnan(all_no.precision) and math.isnan(all_no.f1) and all_no.recall == 0 and all_no.yes_ratio == 0
    assert pope_scores(["yes", None], [True, "No."], normalize=False).tp == 1
    with pytest.raises(ValueError, match="label"):
        pope_scores(["yes"], ["maybe"])
    with pytest.raises(ValueError, match="2 predictions but 1 labels"):
        pope_scores(["yes", "no"], ["yes"])
    json.dumps(perfect.as_dict())


@pytest.mark.parametrize("word, plural", [
    ("dog", "dogs"), ("bus", "buses"), ("knife", "knives"), ("man", "men"), ("policeman", "policemen"),
    ("person", "people"), ("sheep", "sheep"), ("pony", "ponies"), ("toy", "toys"), ("wine glass", "wine glasses"),
    ("dining table", "dining tables"), ("couch", "couches"), ("child", "children"),
])
def test_pluralize(word, plural):
    assert pluralize(word) == plural


TABLE = {"dog": ["puppy"], "hot dog": ["hotdog"], "dining table": ["table"], "person": ["man", "woman", "people"],
         "cat": []}


def test_object_matcher_boundaries_plurals_longest_match():
    m = ObjectMatcher(TABLE)
    assert m.objects_in("A hot dog on the dining table.") == ["hot dog", "dining table"]  # not dog, not table twice
    assert m.objects_in("Hot-dogs and hotdogs") == ["hot dog"]
    assert [w for _, w in m.mentions("Two dogs, three people and tables")] == ["dogs", "people", "tables"]
    assert m.objects_in("A doghouse, a catalog, dogma and a mandolin.") == []  # word boundaries
    assert m.objects_in("The DOG's bowl") == ["dog"]
    assert m.canonical("Dining Tables") == "dining table" and m.canonical("unicorn") is None
    assert m.ground_truth(["puppy", "a man", "unicorn"]) == {"dog", "person", "unicorn"}
    with pytest.raises(ValueError, match="belongs to both"):
        ObjectMatcher({"dog": ["pet"], "cat": ["pet"]})


def test_object_matcher_from_chair_synonyms_file(tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_text("# comment\nperson, girl, boy, man\n\ndining table, table\ntoilet, toilet seat\n")
    m = ObjectMatcher.from_file(path)
    assert m.objects == ("dining table", "person", "toilet")
    assert m.objects_in("Two girls by a toilet seat and a table") == ["person", "toilet", "dining table"]


def test_coco_table_examples():
    m = ObjectMatcher.coco()
    assert len(m.objects) == 80
    assert m.objects_in("A man eating a hot dog at a dining table with his puppy.") == [
        "person", "hot dog", "dining table", "dog"]
    assert m.objects_in("Two teddy bears and a bear") == ["teddy bear", "bear"]
    assert m.objects_in("a cell phone and a computer mouse next to the laptop") == ["cell phone", "mouse", "laptop"]


def test_chair_scores_by_hand():
    m = ObjectMatcher(TABLE)
    captions = [
        "A man eats a hot dog at the dining table.",  # person, hot dog, dining table: all real
        "Two dogs and a woman near tables.",  # dog (real), person + dining table hallucinated
        "A puppy sleeps next to another dog.",  # dog twice, hallucinated (the image has a cat)
        "Nothing to see here.",  # no object
    ]
    truth = [["person", "hot dog", "dining table"], ["dog"], ["cat"], ["cat", "man"]]
    s = chair_scores(captions, truth, m)
    assert (s.mentioned, s.hallucinated, s.hallucinated_captions, s.covered, s.ground_truth) == (7, 3, 2, 4, 7)
    assert s.chair_s == pytest.approx(2 / 4)
    assert s.chair_i == pytest.approx(3 / 7)
    assert s.recall == pytest.approx(4 / 7)
    assert s.per_caption[1]["hallucinated"] == ["person", "dining table"]
    # Every mention counted (original CHAIR code): caption 3 mentions the dog twice.
    r = chair_scores(captions, truth, m, count_repeats=True)
    assert (r.mentioned, r.hallucinated) == (8, 4)
    assert r.chair_i == pytest.approx(4 / 8) and r.chair_s == pytest.approx(2 / 4) and r.recall == pytest.approx(4 / 7)
    assert math.isnan(chair_scores(["nothing"], [["dog"]], m).chair_i)
    assert "per_caption" not in s.as_dict()


def test_coco_ground_truth_from_annotations():
    m = ObjectMatcher(TABLE)
    instances = {"categories": [{"id": 18, "name": "dog"}, {"id": 67, "name": "dining table"}],
                 "annotations": [{"image_id": 1, "category_id": 18}, {"image_id": 1, "category_id": 67},
                                 {"image_id": 2, "category_id": 18}]}
    captions = {"annotations": [{"image_id": 2, "caption": "A woman walks her puppy."},
                                {"image_id": 3, "caption": "A hot dog."}]}
    assert coco_ground_truth(m, instances, captions) == {1: {"dog", "dining table"}, 2: {"dog", "person"},
                                                          3: {"hot dog"}}


def test_amber_scores_by_hand():
    m = ObjectMatcher(TABLE)
    responses = ["A dog on a table.", "A cat and a dog.", "A man."]
    truth = [["dog"], ["dog", "person"], ["person"]]
    hallu = [["cat"], ["cat", "dining table"], ["dog"]]
    s = amber_scores(responses, truth, hallu, m)
    # mentioned 2 + 2 + 1; hallucinated: table (1), cat (2); cover 1 + 1 + 1 of 1 + 2 + 1; hallu hit: cat of 1 + 2 + 1
    assert s.chair == pytest.approx(2 / 5)
    assert s.cover == pytest.approx(3 / 4)
    assert s.hal == pytest.approx(2 / 3)
    assert s.cog == pytest.approx(1 / 4)
    safe = amber_scores(responses, truth, hallu, m, safe=["table"])  # tables never count as hallucinations
    assert (safe.chair, safe.cover, safe.hal, safe.cog) == pytest.approx((1 / 4, 3 / 4, 1 / 3, 1 / 4))


def test_metric_directions():
    assert HIGHER_IS_BETTER["amber_cog"] is False  # lower is better (lmms-eval's amber_g says otherwise)
    assert HIGHER_IS_BETTER["chair_s"] is False and HIGHER_IS_BETTER["chair_i"] is False
    assert HIGHER_IS_BETTER["chair_recall"] is True and HIGHER_IS_BETTER["amber_cover"] is True
