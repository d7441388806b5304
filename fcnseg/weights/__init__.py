"""Foreign weight files read without their frameworks: the Caffe protobuf reader and the Caffe -> fcnseg mapping."""
