set terminal pngcairo size 1000,650 noenhanced
set output 'plumtree_ldh.png'
set title 'Plumtree over HyParView: last delivery hop per broadcast'
set grid
set key bottom left box opaque
set datafile missing 'NaN'
set arrow from 20.5,graph 0 to 20.5,graph 1 nohead dt 2 lc rgb 'gray40'
set arrow from 24.5,graph 0 to 24.5,graph 1 nohead dt 3 lc rgb 'gray40'
set label 'crash' at 20.5,graph 0.97 right offset -0.5,0
set label 'detected' at 24.5,graph 0.97 left offset 0.5,0
set xlabel 'broadcast (one every 5 s from a random live node)'
set key at graph 0.5,graph 0.97 right top box opaque
set ylabel 'last delivery hop'
set yrange [0:*]
plot 'plumtree_1000_20.dat' using 1:4 with linespoints dt 1 lc 1 pt 6 title '1000 nodes, 20% crashed', \
  'plumtree_1000_50.dat' using 1:4 with linespoints dt 2 lc 1 pt 7 title '1000 nodes, 50% crashed', \
  'plumtree_10000_20.dat' using 1:4 with linespoints dt 1 lc 2 pt 6 title '10000 nodes, 20% crashed', \
  'plumtree_10000_50.dat' using 1:4 with linespoints dt 2 lc 2 pt 7 title '10000 nodes, 50% crashed'
