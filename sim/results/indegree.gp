set terminal pngcairo size 1000,650 noenhanced
set output 'indegree.png'
set title 'HyParView: active-view in-degree distribution after stabilization'
set grid
set key bottom left box opaque
set datafile missing 'NaN'
set xlabel 'in-degree'
set ylabel 'nodes (%)'
set style fill solid 0.5
set boxwidth 0.4
plot 'indegree_1000.dat' using ($1+-0.20):2 with boxes lc 1 title '1000 nodes', \
  'indegree_10000.dat' using ($1+0.20):2 with boxes lc 2 title '10000 nodes'
