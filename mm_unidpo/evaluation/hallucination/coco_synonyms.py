"""A COCO synonym table (80 categories), written for this project, and the CHAIR matching rules;
`ObjectMatcher.coco()` uses both.

The rules are those of the original CHAIR code (Rohrbach et al. 2018, LisaAnne/Hallucination
``utils/chair.py``: "baby"/"adult" before an animal and "passenger" before a vehicle are no person, "toilet
seat" is a toilet and no chair, "train track" is no train) and a few more for synonyms our table has and
the original's does not ("baseball" is a ball, but a "baseball player" is a person and no ball; "glove" is
a baseball glove only where the text is about baseball; "chicken" next to food is food, not a bird).
"""

from __future__ import annotations

COCO_SYNONYMS: dict[str, list[str]] = {
    "person": ["people", "man", "woman", "boy", "girl", "child", "kid", "baby", "adult", "lady", "gentleman", "guy",
               "player", "rider", "skier", "snowboarder", "surfer", "skateboarder", "pedestrian", "worker", "chef",
               "policeman", "officer", "teenager", "toddler", "human", "passenger", "driver", "biker", "bicyclist",
               "catcher", "umpire", "cowboy", "tourist", "traveler"],
    "bicycle": ["bike", "cycle"],
    "car": ["automobile", "sedan", "taxi", "cab", "suv", "van", "jeep", "coupe"],
    "motorcycle": ["motorbike", "motor bike", "motor cycle", "scooter", "moped", "dirt bike"],
    "airplane": ["plane", "aeroplane", "jet", "aircraft", "airliner", "air plane"],
    "bus": ["double decker", "trolley bus", "school bus", "minibus"],
    "train": ["locomotive", "tram", "subway", "railway car"],
    "truck": ["lorry", "pickup", "pickup truck", "fire truck", "dump truck"],
    "boat": ["ship", "sailboat", "kayak", "canoe", "yacht", "ferry", "vessel", "rowboat", "speedboat"],
    "traffic light": ["stop light", "stoplight", "traffic signal", "signal light"],
    "fire hydrant": ["hydrant"],
    "stop sign": [],
    "parking meter": ["meter"],
    "bench": ["park bench"],
    "bird": ["pigeon", "seagull", "gull", "duck", "parrot", "sparrow", "goose", "swan", "eagle", "owl", "crow",
             "chicken", "hen", "rooster"],
    "cat": ["kitten", "kitty", "feline"],
    "dog": ["puppy", "pup", "canine", "hound", "poodle", "terrier", "labrador", "retriever", "bulldog", "sheepdog",
            "beagle", "chihuahua", "dachshund", "collie", "pug", "husky", "corgi", "greyhound", "spaniel"],
    "horse": ["pony", "foal", "stallion", "mare", "colt"],
    "sheep": ["lamb", "ram", "ewe"],
    "cow": ["cattle", "bull", "calf", "ox", "oxen"],
    "elephant": [],
    "bear": ["grizzly", "polar bear", "black bear", "brown bear"],
    "zebra": [],
    "giraffe": [],
    "backpack": ["back pack", "rucksack", "knapsack"],
    "umbrella": ["parasol"],
    "handbag": ["purse", "hand bag"],
    "tie": ["necktie", "bow tie"],
    "suitcase": ["luggage", "suit case", "travel bag"],
    "frisbee": ["flying disc"],
    "skis": ["ski"],
    "snowboard": ["snow board"],
    "sports ball": ["ball", "soccer ball", "football", "baseball", "basketball", "tennis ball", "volleyball"],
    "kite": [],
    "baseball bat": ["bat"],
    "baseball glove": ["glove", "mitt", "baseball mitt"],
    "skateboard": ["skate board"],
    "surfboard": ["surf board"],
    "tennis racket": ["racket", "racquet", "tennis racquet"],
    "bottle": [],
    "wine glass": ["wineglass"],
    "cup": ["mug", "coffee cup", "teacup", "tea cup"],
    "fork": [],
    "knife": [],
    "spoon": [],
    "bowl": [],
    "banana": [],
    "apple": [],
    "sandwich": ["burger", "hamburger", "panini"],
    "orange": [],
    "broccoli": [],
    "carrot": [],
    "hot dog": ["hotdog", "frankfurter"],
    "pizza": [],
    "donut": ["doughnut"],
    "cake": ["cupcake", "cheesecake"],
    "chair": ["stool", "armchair"],
    "couch": ["sofa", "loveseat"],
    "potted plant": ["houseplant", "house plant", "plant", "flower pot", "flowerpot"],
    "bed": [],
    "dining table": ["table", "dinner table", "kitchen table", "desk", "picnic table"],
    "toilet": ["urinal", "toilet seat"],
    "tv": ["television", "tv set", "monitor", "computer monitor"],
    "laptop": ["notebook computer", "laptop computer", "computer"],
    "mouse": ["computer mouse"],
    "remote": ["remote control", "controller"],
    "keyboard": [],
    "cell phone": ["phone", "cellphone", "mobile phone", "smartphone", "smart phone", "iphone"],
    "microwave": ["microwave oven"],
    "oven": ["stove"],
    "toaster": [],
    "sink": ["basin"],
    "refrigerator": ["fridge", "freezer"],
    "book": ["novel", "textbook"],
    "clock": [],
    "vase": [],
    "scissors": [],
    "teddy bear": ["teddy", "stuffed bear", "stuffed animal"],
    "hair drier": ["hair dryer", "hairdryer", "blow dryer"],
    "toothbrush": ["tooth brush"],
}


_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
_PASSENGER_VEHICLES = ("train", "jet", "plane", "airplane", "bus", "ship", "boat", "ferry")
# "<sport> <word>": the sport's name is a modifier, not a ball ("baseball player", "football field").
_SPORT_BALLS = ("baseball", "football", "basketball", "volleyball")
_SPORT_NOUNS = ("player", "game", "field", "team", "uniform", "cap", "hat", "helmet", "jersey", "court", "stadium",
                "park", "diamond", "league", "match", "fan", "net", "coach", "pitcher", "batter", "catcher", "card",
                "practice", "season", "shirt", "shoe", "hoop", "goal")

# phrase -> the word of the phrase whose object it is (None: no object); plural forms are added.
CHAIR_COMPOUNDS: dict[str, str | None] = {
    **{f"{q} {a}": a for q in ("baby", "adult") for obj in _ANIMALS for a in (obj, *COCO_SYNONYMS[obj])},
    **{f"{q} {a}": None for q in ("baby", "adult") for a in ("animal", "cub")},
    **{f"passenger {v}": v for v in _PASSENGER_VEHICLES},
    **{f"{s} {n}": n for s in _SPORT_BALLS for n in _SPORT_NOUNS},
    "train track": None, "train station": None, "train platform": None, "railway track": None, "bus stop": None,
    "bus station": None,
    "toilet seat": "toilet", "subway car": "subway", "train car": "train", "tram car": "tram",
}

_BASEBALL = frozenset("baseball softball catcher pitcher batter fielder outfielder infielder umpire bat dugout "
                      "inning mound".split())
_FOOD = frozenset("plate dish bowl meal food dinner lunch breakfast fried grilled roasted roast baked cooked "
                  "barbecue bbq breaded sliced diced shredded spicy teriyaki wing breast nugget tender strip "
                  "thigh drumstick meat salad soup sandwich burger wrap taco pizza pasta rice noodle curry sauce "
                  "broccoli carrot vegetable veggie potato fries bread cheese beef pork shrimp kebab skewer "
                  "dumpling stir fry".split())
# (word, context words (plurals are added), window in tokens or None for the whole text, require): see
# ObjectMatcher.
CHAIR_CONTEXT: tuple[tuple[str, frozenset[str], int | None, bool], ...] = (
    ("glove", _BASEBALL, None, True), ("mitt", _BASEBALL, None, True),
    ("chicken", _FOOD, 3, False), ("duck", _FOOD, 3, False),
    ("seat", frozenset({"toilet"}), None, False),  # "the seat of the toilet" (tables where a seat is a chair)
)
CHAIR_RULES = {"compounds": CHAIR_COMPOUNDS, "context": CHAIR_CONTEXT}
