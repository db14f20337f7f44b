set terminal pngcairo size 1000,650 noenhanced
set output 'scaling.png'
set title 'Membership cost vs cluster size: full mesh, HyParView, client-server'
set grid
set key bottom left box opaque
set datafile missing 'NaN'
set xlabel 'nodes'
set logscale y
set ylabel 'count (log scale)'
set key outside below box
set size ratio 0.45
plot 'scaling.dat' using 1:2 with linespoints title 'full mesh: links per node', \
  'scaling.dat' using 1:3 with linespoints title 'full mesh: frames per join', \
  'scaling.dat' using 1:4 with linespoints title 'HyParView: links per node', \
  'scaling.dat' using 1:5 with linespoints title 'HyParView: frames per join', \
  'scaling.dat' using 1:6 with linespoints dt 2 title 'client-server (10% servers): server links per node (= full mesh)', \
  'scaling.dat' using 1:7 with linespoints title 'client-server (10% servers): client links per node', \
  'scaling.dat' using 1:8 with linespoints title 'client-server (10% servers): frames per client join'
