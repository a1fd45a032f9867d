"""darknet's DIoU-NMS (src/box.c ``diounms_sort`` / ``box_diounms``), transcribed in loops."""

from __future__ import annotations


def loop_diou_nms(boxes, scores, labels, thresh, beta):
    """Darknet's diounms_sort, transcribed: per class, by decreasing score, box_diounms."""
    keep = []
    for c in labels.unique().tolist():
        idx = [i for i in scores.argsort(descending=True).tolist() if labels[i] == c]
        removed = set()
        for a_pos, a in enumerate(idx):
            if a in removed:
                continue
            keep.append(a)
            for b in idx[a_pos + 1 :]:
                if b in removed:
                    continue
                x1, y1, x2, y2 = boxes[a].tolist()
                u1, v1, u2, v2 = boxes[b].tolist()
                iw = max(0.0, min(x2, u2) - max(x1, u1))
                ih = max(0.0, min(y2, v2) - max(y1, v1))
                inter = iw * ih
                iou = inter / ((x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter)
                c2 = (max(x2, u2) - min(x1, u1)) ** 2 + (max(y2, v2) - min(y1, v1)) ** 2
                d2 = ((x1 + x2 - u1 - u2) / 2) ** 2 + ((y1 + y2 - v1 - v2) / 2) ** 2
                if iou - (d2 / c2) ** beta > thresh:
                    removed.add(b)
    return sorted(keep, key=lambda i: -scores[i].item())
