"""Phrases, voices and speaking rates of the talking-faces dataset, split so that
validation and test use phrases and voices never seen in training."""

TRAIN_PHRASES = (
    "Papa bought a map at the market.",
    "Mama made a warm bowl of soup.",
    "Bob moved the big blue boat.",
    "The puppy jumped by the pond.",
    "Please pass me the maple syrup.",
    "My mom baked a pumpkin pie.",
    "Peter picked a bunch of plums.",
    "Bring the box up from the basement.",
    "Maybe we can meet by the mall.",
    "A brave bear sleeps in the woods.",
    "Open the window and breathe.",
    "The baby smiled at the moon.",
    "Paul paints pictures of boats.",
    "Bees buzz above the bright flowers.",
    "Tom put the apples in the bag.",
    "We are happy to be home again.",
    "Come along, the bus is about to leave.",
    "Pam bought bread and butter.",
    "The robot beeps when it moves.",
    "Ben plays the piano every morning.",
    "Mix the paint with a small brush.",
    "The map shows a path to the beach.",
    "My brother paddles a bamboo boat.",
    "Put the pepper back on the table.",
    "Bill combed his hair before lunch.",
    "A bumpy road made the car bounce.",
    "The moon is bright above the bay.",
    "Please open the purple umbrella.",
    "Mike bought a map of Bombay.",
    "Bubbles pop upon the pebbles.",
    "Maybe Mary will bake more pies.",
    "The lamp by the bed is broken.",
    "Pick a bright ripe apple, Mabel.",
    "Emma hums a simple melody.",
    "Bobby combs the pony by the barn.",
    "The ship will arrive before noon.",
    "Sam keeps a map of the moon.",
    "Put the pumpkin by the door, Ma.",
    "A big bus stopped by the pub.",
    "Paper boats float in the puddle.",
)
VALIDATION_PHRASES = (
    "Mom bought a basket of plums.",
    "The baby plays with a blue ball.",
    "Bob paints maps of the bay.",
    "Please bring me a bowl of berries.",
    "Amy opened a box of pebbles.",
    "Pat moved the lamp by the map.",
)
TEST_PHRASES = (
    "Pam made a map of the marsh.",
    "Bring a blanket to the boat, Ben.",
    "My puppy sleeps by the big pump.",
    "Maybe Paul will buy a bamboo pipe.",
    "The bumblebee hummed by the pool.",
    "Put a plum in the bamboo bowl.",
)
TRAIN_VOICES = ("en-us", "en-us+f2", "en-us+m3", "en-gb-x-rp", "en-gb-x-rp+f4",
                "en+m7", "en-us+klatt")
VALIDATION_VOICES = ("en-029+f3", "en-GB-scotland")
TEST_VOICES = ("en-us+f5", "en-GB-scotland+m2")
RATES = (130, 160, 190)

SPLITS = {
    "train": (TRAIN_PHRASES, TRAIN_VOICES),
    "validation": (VALIDATION_PHRASES, VALIDATION_VOICES),
    "test": (TEST_PHRASES, TEST_VOICES),
}
