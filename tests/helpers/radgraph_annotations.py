"""Hand-written CN-RadGraph annotations shared by the annotation tests (reading and writing)."""

TEXT = "右侧胸腔积液，双肺纹理增多。"
# 右0 侧1 胸2 腔3 积4 液5 ，6 双7 肺8 纹9 理10 增11 多12 。13

# Entities out of span order, some without "keyword" (inferred) and one whose given keyword ("")
# differs from the inferred one ("enhanced") and must be kept.
HAND = {
    "r1": {
        "text": TEXT,
        "data_split": "dev",
        "data_source": "hand",
        "entities": {
            "1": {"tokens": "积液", "label": "DPO", "start_ix": 4, "end_ix": 5,
                  "relations": [["located_at", "3"]]},
            "2": {"tokens": "增多", "label": "DPO", "start_ix": 11, "end_ix": 12,
                  "relations": [["located_at", "4"]], "keyword": ""},
            "3": {"tokens": "右侧胸腔", "label": "Anatomy", "start_ix": 0, "end_ix": 3,
                  "relations": [], "keyword": "chest"},
            "4": {"tokens": "双肺", "label": "Anatomy", "start_ix": 7, "end_ix": 8,
                  "relations": []},
            "5": {"tokens": "纹理", "label": "NO", "start_ix": 9, "end_ix": 10,
                  "relations": [["modify", "2"]]},
        }},
    "r0": {"text": "心肺未见异常。", "entities": {}, "data_split": "test"},
}

# HAND as annotation_writer writes it: entities in span order, ids renumbered, keywords filled in.
HAND_CANONICAL = {
    "r1": {
        "text": TEXT,
        "data_split": "val",
        "entities": {
            "1": {"tokens": "右侧胸腔", "label": "Anatomy", "start_ix": 0, "end_ix": 3,
                  "relations": [], "keyword": "chest"},
            "2": {"tokens": "积液", "label": "DPO", "start_ix": 4, "end_ix": 5,
                  "relations": [["located_at", "1"]], "keyword": "effusion"},
            "3": {"tokens": "双肺", "label": "Anatomy", "start_ix": 7, "end_ix": 8,
                  "relations": [], "keyword": "lung"},
            "4": {"tokens": "纹理", "label": "NO", "start_ix": 9, "end_ix": 10,
                  "relations": [["modify", "5"]], "keyword": "texture"},
            "5": {"tokens": "增多", "label": "DPO", "start_ix": 11, "end_ix": 12,
                  "relations": [["located_at", "3"]], "keyword": ""},
        }},
    "r0": {"text": "心肺未见异常。", "data_split": "test", "entities": {}},
}
