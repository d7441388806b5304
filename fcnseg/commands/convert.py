"""`fcnseg convert`: any supported weights file (pytorch-fcn, Caffe, torchvision, a VGG16 or ResNet classifier) -> an fcnseg checkpoint."""

from __future__ import annotations

import logging

from fcnseg.weights.checkpoint import fcn_from_classifier, load_model
from fcnseg.config import ARCHES, RESNET_ARCH
from fcnseg.data.classes import read_class_file
from fcnseg.files import check_output_path

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="turn pytorch-fcn, Caffe, torchvision or classifier weights into an fcnseg checkpoint",
        description="Read a pytorch-fcn .pth, a reference .caffemodel, torchvision's fcn_resnet50/101_coco .pth, or "
        "(with --from-classifier) an ImageNet VGG16 or ResNet-50/101 classifier, and write a self-describing fcnseg checkpoint that 'fcnseg eval/predict/train' load "
        "with nothing else.",
    )
    p.add_argument("source", help="weights file to read")
    p.add_argument("output", help="fcnseg checkpoint to write")
    p.add_argument("--arch", choices=ARCHES + (RESNET_ARCH,),
                   help="architecture: needed for raw FCN-8s at-once weights, and the head to build with "
                   "--from-classifier (default there: fcn32s for VGG16; a ResNet has only fcn)")
    p.add_argument("--from-classifier", action="store_true",
                   help="source is an ImageNet VGG16 or ResNet-50/101 classifier: transplant it into a new FCN "
                   "(net surgery; a ResNet gets torchvision's FCN head)")
    p.add_argument("--aux", action="store_true",
                   help="with --from-classifier on a ResNet: add torchvision's auxiliary head on layer3")
    p.add_argument("--num-classes", type=int, default=21, help="classes of the new FCN with --from-classifier")
    p.add_argument("--classes", metavar="FILE", help="class file naming the classes (one name per line)")
    p.set_defaults(func=run)


def run(args) -> int:
    check_output_path(args.output, "file", "output")
    class_names = read_class_file(args.classes).names if args.classes else None
    if args.from_classifier:
        num_classes = len(class_names) if class_names else args.num_classes
        loaded = fcn_from_classifier(args.source, arch=args.arch, num_classes=num_classes,
                                     class_names=class_names, aux=args.aux)
    else:
        loaded = load_model(args.source, arch=args.arch, class_names=class_names)
    loaded.save(args.output, extra={"converted_from": str(args.source)})
    log.info("%s -> %s: %s on %s, %d classes, %s input", args.source, args.output, loaded.config.arch,
             loaded.config.backbone, loaded.config.num_classes, loaded.normalization.name)
    return 0
