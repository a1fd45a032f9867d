"""darknet's ``detector map`` (src/detector.c ``validate_detector_map``), transcribed in loops
over COCO-format ground truth and results."""

from __future__ import annotations


def _iou(a, b) -> float:
    """IoU of two COCO xywh boxes (darknet's box_iou, in pixels)."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = min(ax2, bx2) - max(a[0], b[0])
    h = min(ay2, by2) - max(a[1], b[1])
    inter = w * h if w > 0 and h > 0 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def darknet_loops(coco, results, thresh, iou_thresh, map_points):
    """validate_detector_map step by step, as plain loops over images, detections and ranks."""
    cats = sorted(coco.getCatIds())
    classes = len(cats)
    detections = []  # [p, class_id, truth_flag, unique_truth_index]
    unique_truth_count = 0
    truth_classes_count = [0] * classes
    tp_for_thresh = [0] * classes
    fp_for_thresh = [0] * classes
    avg_iou = [0.0] * classes
    for image_id in sorted(coco.getImgIds()):
        truth = [(cats.index(a["category_id"]), a["bbox"]) for a in coco.imgToAnns[image_id]]
        for t in truth:
            truth_classes_count[t[0]] += 1
        checkpoint = len(detections)
        for d in [r for r in results if r["image_id"] == image_id]:
            class_id, prob = cats.index(d["category_id"]), d["score"]
            truth_index, max_iou = -1, 0.0
            for j, (tid, tbox) in enumerate(truth):
                current = _iou(d["bbox"], tbox)
                if current > iou_thresh and class_id == tid and current > max_iou:
                    max_iou, truth_index = current, unique_truth_count + j
            detections.append([prob, class_id, int(truth_index > -1), truth_index])
            if prob > thresh:
                found = any(
                    detections[z][3] == truth_index for z in range(checkpoint, len(detections) - 1)
                )
                if truth_index > -1 and not found:
                    avg_iou[class_id] += max_iou
                    tp_for_thresh[class_id] += 1
                else:
                    fp_for_thresh[class_id] += 1
        unique_truth_count += len(truth)
    detections.sort(key=lambda x: -x[0])
    n = len(detections)
    pr = [[{"tp": 0, "fp": 0, "p": 0.0, "r": 0.0} for _ in range(n)] for _ in range(classes)]
    truth_flags = [0] * unique_truth_count
    for rank in range(n):
        if rank > 0:
            for c in range(classes):
                pr[c][rank]["tp"], pr[c][rank]["fp"] = pr[c][rank - 1]["tp"], pr[c][rank - 1]["fp"]
        p, c, flag, ti = detections[rank]
        if flag == 1 and truth_flags[ti] == 0:
            truth_flags[ti] = 1
            pr[c][rank]["tp"] += 1
        else:
            pr[c][rank]["fp"] += 1
        for i in range(classes):
            tp, fp = pr[i][rank]["tp"], pr[i][rank]["fp"]
            fn = truth_classes_count[i] - tp
            pr[i][rank]["p"] = tp / (tp + fp) if tp + fp > 0 else 0.0
            pr[i][rank]["r"] = tp / (tp + fn) if tp + fn > 0 else 0.0
    aps = []
    for i in range(classes):
        ap = 0.0
        if map_points == 0:
            last_recall, last_precision = pr[i][n - 1]["r"], pr[i][n - 1]["p"]
            for rank in range(n - 2, -1, -1):
                delta = last_recall - pr[i][rank]["r"]
                last_recall = pr[i][rank]["r"]
                if pr[i][rank]["p"] > last_precision:
                    last_precision = pr[i][rank]["p"]
                ap += delta * last_precision
            ap += last_recall * last_precision  # the area left of rank 0 (darknet since 2020-07)
        else:
            for point in range(map_points):
                cur_recall = point * 1.0 / (map_points - 1)
                cur_precision = 0.0
                for rank in range(n):
                    if pr[i][rank]["r"] >= cur_recall and pr[i][rank]["p"] > cur_precision:
                        cur_precision = pr[i][rank]["p"]
                ap += cur_precision
            ap /= map_points
        aps.append(ap)
    for i in range(classes):
        if tp_for_thresh[i] + fp_for_thresh[i] > 0:
            avg_iou[i] /= tp_for_thresh[i] + fp_for_thresh[i]
    return aps, tp_for_thresh, fp_for_thresh, truth_classes_count, avg_iou
